"""Which versions of a model to serve: Triton's version policy, read from ``<repo>/<model>/config.json``.

    {"version_policy": {"latest": {"num_versions": 2}}}     the 2 highest version numbers (default: 1)
    {"version_policy": {"all": {}}}                          every version
    {"version_policy": {"specific": {"versions": [1, 3]}}}  exactly these

``config.json`` is optional; without it a model serves its latest version. docs/REPOSITORY.md has the rest.
"""

from __future__ import annotations

from collections.abc import Collection

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator


class Latest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_versions: PositiveInt = 1


class AllVersions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Specific(BaseModel):
    model_config = ConfigDict(extra="forbid")
    versions: list[PositiveInt] = Field(min_length=1)


class VersionPolicy(BaseModel):
    """Exactly one of ``latest``, ``all`` and ``specific``; none given means ``latest`` 1."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    latest: Latest | None = None
    all: AllVersions | None = None
    specific: Specific | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> VersionPolicy:
        given = [k for k in ("latest", "all", "specific") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of latest, all and specific, got {' and '.join(given)}")
        if not given:
            object.__setattr__(self, "latest", Latest())
        return self

    def select(self, available: Collection[int]) -> set[int]:
        """Gives back the versions to serve among ``available``; ``specific`` also names missing ones."""
        if self.specific is not None:
            return set(self.specific.versions)
        if self.all is not None:
            return set(available)
        assert self.latest is not None
        return set(sorted(available, reverse=True)[: self.latest.num_versions])

    def describe(self) -> str:
        if self.specific is not None:
            return f"specific {sorted(self.specific.versions)}"
        if self.all is not None:
            return "all"
        assert self.latest is not None
        return f"latest {self.latest.num_versions}"


class ModelConfig(BaseModel):
    """The optional ``config.json`` of a model directory."""

    model_config = ConfigDict(extra="forbid")
    version_policy: VersionPolicy = Field(default_factory=VersionPolicy)


def parse_model_config(data: bytes) -> ModelConfig:
    """Gives back the config ``data`` holds; raises ``ValueError`` saying what is wrong."""
    try:
        return ModelConfig.model_validate_json(data)
    except ValueError as e:  # pydantic's ValidationError is a ValueError
        errors = getattr(e, "errors", None)
        if callable(errors):
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in errors()[:5]
            )
            raise ValueError(
                f'{problems} (expected {{"version_policy": {{"latest": {{"num_versions": N}}}}}}, '
                '{"all": {}} or {"specific": {"versions": [...]}})'
            ) from None
        raise
