"""Errors raised while reading or writing an artifact.

Every error names the file it is about and says what was expected and what was found::

    ArtifactError
     ├── ArtifactNotFoundError     the directory or one of its files is missing
     ├── ManifestError             manifest.json is not valid JSON, breaks the schema or contradicts itself
     │    └── UnsupportedFormatError   format_version is not one this bnserve reads
     ├── ChecksumError             a file's SHA-256 differs from the one recorded at export
     ├── TensorMismatchError       a tensor is missing, extra, or has the wrong shape or dtype
     ├── NonFiniteError            a tensor holds NaN or +-inf
     ├── CanaryMismatchError       the rebuilt network does not reproduce the outputs recorded at export
     ├── UnsupportedLayerError     the lean (numpy) runtime does not compute one of the layers
     ├── ExportError               an export for another runtime (ONNX, Triton) failed or did not verify
     └── RepositoryNameError       a model or version name that cannot name a repository directory (ValueError)

    InputError (ValueError)        a raw row's value does not fit its feature's kind: row and feature named
"""

from __future__ import annotations

from pathlib import Path


class ArtifactError(Exception):
    """Base class: the artifact at ``path`` cannot be written or served."""

    def __init__(self, message: str, *, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        super().__init__(f"{path}: {message}" if path is not None else message)


class ArtifactNotFoundError(ArtifactError):
    pass


class ManifestError(ArtifactError):
    pass


class UnsupportedFormatError(ManifestError):
    pass


class ChecksumError(ArtifactError):
    pass


class TensorMismatchError(ArtifactError):
    pass


class NonFiniteError(ArtifactError):
    pass


class CanaryMismatchError(ArtifactError):
    pass


class UnsupportedLayerError(ArtifactError):
    pass


class ExportError(ArtifactError):
    pass


class RepositoryNameError(ArtifactError, ValueError):
    pass


class InputError(ValueError):
    """A raw row cannot be encoded: the value at ``row`` of ``feature`` is not of the feature's kind."""

    def __init__(self, message: str, *, row: int, feature: str) -> None:
        self.row, self.feature = row, feature
        super().__init__(message)
