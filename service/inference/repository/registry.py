"""The loaded versions of every model, switched atomically, loaded and unloaded off the request path.

    registry = ModelRegistry(RepositorySource(root), load=load_version)
    registry.refresh().result()                  # scan, load what the policies select (background thread)
    with registry.lease("wine", "2") as served:  # or lease() for the default model's newest ready version
        await served.value.predict(rows)         # runs wholly on version 2, even if it is unloaded meanwhile
    registry.index()                             # every model and version: READY / LOADING / UNAVAILABLE, why
    registry.load("wine", [1]).result()          # rollback: serve version 1 only (until a plain load)
    registry.unload("wine").result()

Every change runs on one background thread, one at a time: a version is loaded and verified by ``load``
(which also warms it up) while the versions already serving keep answering; then the model's set of
serving versions is replaced in one assignment. A request holds a lease on the version it started on, so
a version taken out of service is closed (its memory freed) only once its last request has finished.

A version that fails to load is UNAVAILABLE with the reason, and the model keeps serving: as many of the
versions that were serving as the refused ones would have replaced stay in service.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Generic, Literal, Protocol, TypeVar

from models.errors import RepositoryNameError
from models.repository import check_model_name, parse_version
from service.errors import BadRequest, NotFound, NotReady
from service.inference.repository.scan import Fingerprint, ModelFiles, Source, VersionFiles

log = logging.getLogger("bnserve")

State = Literal["READY", "LOADING", "UNAVAILABLE"]
UNLOADED: Literal["unloaded"] = "unloaded"  # an override: the model was unloaded by request
Override = list[int] | Literal["unloaded"]  # JSON-able, so several workers can share them


class Servable(Protocol):
    """What ``load`` gives back: a verified, warmed-up version, ready to answer."""

    @property
    def artifact_sha256(self) -> str: ...

    def close(self) -> None: ...


S = TypeVar("S", bound=Servable)
Loader = Callable[[str, int, Path], S]


@dataclass(frozen=True)
class VersionStatus:
    model: str
    version: int
    state: State
    reason: str = ""
    artifact_sha256: str | None = None


@dataclass
class _Loaded(Generic[S]):
    model: str
    version: int
    value: S
    fingerprint: Fingerprint
    refs: int = 0
    retired: bool = False


@dataclass
class Outcome:
    """What one change did to a model: the versions serving afterwards and those refused, with why."""

    model: str
    serving: list[int] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)


class Lease(Generic[S]):
    """One request's hold on one loaded version; the version is closed only once every lease is released."""

    def __init__(self, registry: ModelRegistry[S], entry: _Loaded[S]) -> None:
        self._registry, self._entry = registry, entry
        self.model, self.version, self.value = entry.model, entry.version, entry.value

    def __enter__(self) -> Lease[S]:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def release(self) -> None:
        if self._entry is not None:
            self._registry._release(self._entry)
            self._entry = None  # type: ignore[assignment]


class ModelRegistry(Generic[S]):
    def __init__(
        self,
        source: Source,
        *,
        load: Loader[S],
        default_model: str | None = None,
        overrides: Overrides | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.source = source
        self._load = load
        self._default_model = default_model
        self.overrides: Overrides = overrides or OverrideStore()
        self._on_change = on_change  # after every applied change, on the background thread
        self._lock = threading.Lock()  # guards leases (refs, retired) and the tables below
        self._serving: dict[str, dict[int, _Loaded[S]]] = {}  # replaced per model, never mutated in place
        self._status: dict[str, dict[int, VersionStatus]] = {}
        self._refused: dict[tuple[str, int], Fingerprint] = {}  # not retried until the files change
        self._models: dict[str, ModelFiles] = {}  # the last scan
        self._scanned = False
        self._default: str | None = default_model  # kept with each scan: every request reads it
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bnserve-repository")
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()
        self.applied_generation = 0  # of the overrides, by the last full refresh (several workers)

    # ------------------------------------------------------------------------------------ request path

    def lease(self, model: str | None = None, version: str | int | None = None) -> Lease[S]:
        """Gives back a hold on the version that answers a request for ``model`` (default: the default
        model) at ``version`` (default: its highest serving version)."""
        name = self._model_name(model)
        number = self._version_number(version)
        with self._lock:
            serving = self._serving.get(name)
            if not serving:
                raise self._not_serving(name)
            entry = serving.get(number if number is not None else max(serving))
            if entry is None:
                raise self._version_not_serving(name, number, serving)
            entry.refs += 1
        return Lease(self, entry)

    def _release(self, entry: _Loaded[S]) -> None:
        with self._lock:
            entry.refs -= 1
            done = entry.retired and entry.refs == 0
        if done:
            self._close_later(entry)

    def default_model(self) -> str | None:
        """Gives back the model a request naming none gets: the setting, else the only (or first) model."""
        return self._default

    def _rescan(self) -> None:
        self._models = self.source.scan()
        self._default = self._default_model or min(self._models, default=None)
        self._scanned = True

    @property
    def ready(self) -> bool:
        """Whether the default model has a version serving."""
        name = self.default_model()
        return name is not None and bool(self._serving.get(name))

    def _model_name(self, model: str | None) -> str:
        if model is None:
            name = self._default
            if not self._scanned:
                raise NotReady("not loaded yet")
            if name is None:
                raise NotReady(f"no model is served: the {self.source.describe()} holds none")
            return name
        try:
            return check_model_name(model)
        except RepositoryNameError as e:
            raise BadRequest(str(e)) from None

    @staticmethod
    def _version_number(version: str | int | None) -> int | None:
        if version is None or isinstance(version, int):
            return version
        try:
            return parse_version(version)
        except RepositoryNameError as e:
            raise BadRequest(str(e)) from None

    def _number(self, version: str | int) -> int:
        number = self._version_number(version)
        assert number is not None
        return number

    def _not_serving(self, name: str) -> Exception:
        if name not in self._models and name not in self._status:
            if not any(self._serving.values()) and self._default is not None and self._default != name:
                # Nothing serves at all: the server is not ready, which says more than "no such model".
                return NotReady(f"not ready: {self._not_serving(self._default).args[0]}")
            return self._no_such_model(name)
        reasons = "; ".join(
            f"version {s.version}: {s.state} ({s.reason})" for s in self._status.get(name, {}).values()
        )
        return NotReady(f"model {name!r} has no version ready: {reasons or 'no version directory'}")

    def _version_not_serving(
        self, name: str, number: int | None, serving: dict[int, _Loaded[S]]
    ) -> Exception:
        status = self._status.get(name, {}).get(number) if number is not None else None
        where = f"the serving versions are {sorted(serving)}"
        if status is None:
            return NotFound(f"model {name!r} has no version {str(number)!r}; {where}")
        if status.state == "LOADING":
            return NotReady(f"version {number} of model {name!r} is LOADING; {where}")
        return NotFound(f"version {number} of model {name!r} is {status.state} ({status.reason}); {where}")

    # ------------------------------------------------------------------------------------ state

    def index(self) -> list[VersionStatus]:
        """Gives back every model and version the repository holds or serves, in name and number order."""
        with self._lock:
            return [
                status for name in sorted(self._status) for _, status in sorted(self._status[name].items())
            ]

    def models(self) -> list[str]:
        with self._lock:
            return sorted(set(self._models) | {n for n, s in self._serving.items() if s})

    def serving_versions(self, model: str) -> list[int]:
        return sorted(self._serving.get(model, {}))

    def serving(self) -> list[S]:
        """Gives back every serving version's value, by model name and version number."""
        table = self._serving
        return [table[name][n].value for name in sorted(table) for n in sorted(table[name])]

    # ------------------------------------------------------------------------------------ changes

    def refresh(self, *, retry: bool = False) -> Future[list[Outcome]]:
        """Scans the source and applies every model's policy; ``retry`` also retries refused versions."""
        return self._executor.submit(self._apply_all, retry=retry)

    def load(self, model: str, versions: Iterable[str | int] | None = None) -> Future[Outcome]:
        """(Re)loads ``model`` by its policy or, given ``versions``, serves exactly those (a rollback)
        until the next plain load. Raises ``BadRequest``/``NotFound`` for names that are not there."""
        name = self._model_name(model)
        numbers = None if versions is None else sorted({self._number(v) for v in versions})
        return self._executor.submit(self._load_model, name, numbers)

    def unload(self, model: str, version: str | int | None = None) -> Future[Outcome]:
        """Takes ``model`` (or one version of it) out of service until it is loaded again."""
        name = self._model_name(model)
        return self._executor.submit(self._unload_model, name, self._version_number(version))

    def _load_model(self, name: str, numbers: list[int] | None) -> Outcome:
        self._rescan()
        files = self._require_model(name)
        missing = [n for n in numbers or () if n not in files.versions]
        if missing:
            raise NotFound(
                f"model {name!r} has no version {', '.join(map(str, missing))}; its versions are "
                f"{sorted(files.versions)}"
            )
        self.overrides.set(name, numbers)
        try:
            return self._apply(name, files, retry=True)
        finally:
            self._changed()

    def _unload_model(self, name: str, number: int | None) -> Outcome:
        self._rescan()
        if number is None:
            self._require_model(name)
            self.overrides.set(name, UNLOADED)
        else:
            if number not in self._serving.get(name, {}):
                raise NotFound(
                    f"version {number} of model {name!r} is not loaded; the loaded versions are "
                    f"{self.serving_versions(name)}"
                )
            self.overrides.set(name, [n for n in self.serving_versions(name) if n != number] or UNLOADED)
        try:
            return self._apply(name, self._models.get(name), retry=False)
        finally:
            self._changed()

    def _require_model(self, name: str) -> ModelFiles:
        files = self._models.get(name)
        if files is None:
            raise self._no_such_model(name)
        return files

    def _no_such_model(self, name: str) -> NotFound:
        known = ", ".join(repr(n) for n in sorted(self._models)) or "no model"
        return NotFound(
            f"no model {name!r}: this server serves {known} (GET /models; {self.source.describe()})"
        )

    def _apply_all(self, *, retry: bool) -> list[Outcome]:
        generation = self.overrides.generation()
        self._rescan()
        names = sorted(set(self._models) | set(self._serving) | set(self._status))
        try:
            return [self._apply(name, self._models.get(name), retry=retry) for name in names]
        finally:
            self.applied_generation = generation
            self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            try:
                self._on_change()
            except Exception:
                log.exception("publishing the repository's state failed")

    def _apply(self, name: str, files: ModelFiles | None, *, retry: bool) -> Outcome:
        """Brings ``name``'s serving versions to what its policy (or override) selects; one switch."""
        current = self._serving.get(name, {})
        wanted, why_not = self._wanted(name, files)
        outcome = Outcome(name)
        fresh: dict[int, _Loaded[S]] = {}
        for number in sorted(wanted, reverse=True):  # newest first: it is the one answering by default
            version = files.versions.get(number) if files is not None else None
            if version is None:
                outcome.refused[number] = f"the version policy names version {number}, which has no directory"
                continue
            old = current.get(number)
            if old is not None and old.fingerprint == version.fingerprint:
                continue
            reason = self._load_version(name, version, retry=retry, fresh=fresh)
            if reason is not None:
                outcome.refused[number] = reason
        serving = {n: fresh.get(n) or current[n] for n in wanted if n in fresh or n in current}
        shortfall = len(wanted) - len(serving)
        stand_ins = sorted(set(current) - set(serving), reverse=True)[:shortfall]
        serving |= {n: current[n] for n in stand_ins}
        if len(stand_ins) < shortfall and files is not None and self._may_fall_back(name, files):
            stand_ins += self._fall_back(
                name, files, shortfall - len(stand_ins), serving, outcome, retry=retry
            )
        with self._lock:
            self._serving = {**self._serving, name: serving}  # the switch
            retired = [e for n, e in current.items() if serving.get(n) is not e]
            for entry in retired:
                entry.retired = True
            closing = [e for e in retired if e.refs == 0]
        for entry in closing:
            self._close_later(entry)
        self._record(name, files, serving, outcome, stand_ins, why_not)
        outcome.serving = sorted(serving)
        return outcome

    def _may_fall_back(self, name: str, files: ModelFiles) -> bool:
        """Whether older versions may stand in for refused ones: under a ``latest`` policy, not under
        ``specific`` versions or a load request's."""
        return self.overrides.get(name) is None and files.problem is None and files.policy.latest is not None

    def _fall_back(
        self,
        name: str,
        files: ModelFiles,
        count: int,
        serving: dict[int, _Loaded[S]],
        outcome: Outcome,
        *,
        retry: bool,
    ) -> list[int]:
        """Loads up to ``count`` of the newest versions not serving yet into ``serving`` (at startup, no
        version was serving to stand in for a refused one); gives back their numbers."""
        loaded: list[int] = []
        for number in sorted(set(files.versions) - set(serving) - set(outcome.refused), reverse=True):
            if len(loaded) == count:
                break
            fresh: dict[int, _Loaded[S]] = {}
            reason = self._load_version(name, files.versions[number], retry=retry, fresh=fresh)
            if reason is not None:
                outcome.refused[number] = reason
                continue
            serving[number] = fresh[number]
            loaded.append(number)
        return loaded

    def _wanted(self, name: str, files: ModelFiles | None) -> tuple[set[int], str]:
        """Gives back the versions to serve and a phrase saying why the others are not."""
        if files is None:
            return set(), "the model directory is gone"
        override = self.overrides.get(name)
        if override == UNLOADED:
            return set(), "unloaded by request"
        if isinstance(override, list):
            return set(override), f"a load request asked for versions {sorted(override)}"
        if files.problem is not None:
            return set(self._serving.get(name, {})), f"kept: {files.problem}"
        return files.policy.select(
            files.versions
        ), f"not selected by the version policy ({files.policy.describe()})"

    def _load_version(
        self, name: str, version: VersionFiles, *, retry: bool, fresh: dict[int, _Loaded[S]]
    ) -> str | None:
        """Loads one version into ``fresh``; gives back why it was refused, if it was."""
        key = (name, version.number)
        if not retry and self._refused.get(key) == version.fingerprint and version.fingerprint:
            status = self._status.get(name, {}).get(version.number)
            return status.reason if status is not None else "refused"
        if version.problem is not None:
            reason = version.problem
        else:
            self._set_status(VersionStatus(name, version.number, "LOADING", "loading and verifying"))
            try:
                value = self._load(name, version.number, version.path)
            except Exception as e:  # a version that cannot be served must never take the model down
                reason = str(e) or f"refused ({type(e).__name__})"
            else:
                fresh[version.number] = _Loaded(name, version.number, value, version.fingerprint)
                self._refused.pop(key, None)
                log.info("model %r version %d loaded from %s", name, version.number, version.path)
                return None
        self._refused[key] = version.fingerprint
        log.error("model %r version %d %s", name, version.number, reason)
        return reason

    def _record(
        self,
        name: str,
        files: ModelFiles | None,
        serving: dict[int, _Loaded[S]],
        outcome: Outcome,
        stand_ins: list[int],
        why_not: str,
    ) -> None:
        statuses: dict[int, VersionStatus] = {}
        numbers = set(files.versions if files is not None else ()) | set(serving) | set(outcome.refused)
        for number in sorted(numbers):
            entry = serving.get(number)
            if entry is not None:
                reason = "serving"
                if number in stand_ins:
                    reason = f"serving in place of refused version(s) {sorted(outcome.refused)}"
                elif number in outcome.refused:
                    reason = f"serving the copy loaded before; the new files were {outcome.refused[number]}"
                statuses[number] = VersionStatus(name, number, "READY", reason, entry.value.artifact_sha256)
            elif number in outcome.refused:
                statuses[number] = VersionStatus(name, number, "UNAVAILABLE", outcome.refused[number])
            else:
                statuses[number] = VersionStatus(name, number, "UNAVAILABLE", why_not)
        with self._lock:
            if statuses or files is not None:
                self._status[name] = statuses
            else:
                self._status.pop(name, None)

    def _set_status(self, status: VersionStatus) -> None:
        with self._lock:
            self._status[status.model] = {**self._status.get(status.model, {}), status.version: status}

    def _close_later(self, entry: _Loaded[S]) -> None:
        """Closes a version taken out of service on the background thread, never on a request's."""
        try:
            self._executor.submit(self._close, entry)
        except RuntimeError:  # the registry is shutting down: close here
            self._close(entry)

    @staticmethod
    def _close(entry: _Loaded[S]) -> None:
        try:
            entry.value.close()
        except Exception:
            log.exception("closing model %r version %d failed", entry.model, entry.version)
        log.info("model %r version %d unloaded", entry.model, entry.version)

    # ------------------------------------------------------------------------------------ polling

    def start_polling(self, *, scan_every_s: float | None = None, watch_every_s: float | None = None) -> None:
        """Applies what changed, on a thread of its own: every ``scan_every_s`` seconds, new, removed and
        edited versions; every ``watch_every_s``, the load and unload requests another worker received.
        Neither given: nothing to watch, no thread."""
        intervals = [s for s in (scan_every_s, watch_every_s) if s is not None]
        if not intervals:
            return
        self._poller = threading.Thread(
            target=self._poll,
            args=(min(intervals), scan_every_s),
            name="bnserve-repository-poll",
            daemon=True,
        )
        self._poller.start()

    def _poll(self, tick_s: float, scan_every_s: float | None) -> None:
        scanned = time.monotonic()
        while not self._stop.wait(tick_s):
            try:
                # Compared with what the last refresh applied, not with what this thread saw first: a
                # request another worker took while this thread was starting is not missed.
                moved = self.overrides.generation() != self.applied_generation
                scan = scan_every_s is not None and time.monotonic() - scanned >= scan_every_s - tick_s / 2
                if scan:
                    scanned = time.monotonic()
                if moved or (scan and self.source.scan() != self._models):
                    self.refresh().result()
            except Exception:
                log.exception(
                    "watching the %s failed; trying again in %.2f s", self.source.describe(), tick_s
                )

    def close(self) -> None:
        """Stops polling and closes every loaded version."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
        self._executor.shutdown(wait=True)
        with self._lock:
            entries = [e for serving in self._serving.values() for e in serving.values()]
            self._serving = {}
        for entry in entries:
            self._close(entry)


class Overrides(Protocol):
    """The load and unload requests in force, per model: versions asked for, or ``"unloaded"``; the
    generation counts the changes."""

    def get(self, model: str) -> Override | None: ...

    def set(self, model: str, value: Override | None) -> None: ...

    def generation(self) -> int: ...


class OverrideStore:
    """The load and unload requests in force, per model: versions asked for, or ``"unloaded"``.

    This one lives in the process; ``SharedOverrides`` (service/inference/repository/shared.py) keeps them
    in a directory that every worker reads, so a request to one worker changes them all.
    """

    def __init__(self) -> None:
        self._overrides: dict[str, Override] = {}
        self._generation = 0

    def get(self, model: str) -> Override | None:
        return self._overrides.get(model)

    def set(self, model: str, value: Override | None) -> None:
        if value is None:
            self._overrides.pop(model, None)
        else:
            self._overrides[model] = value
        self._generation += 1

    def generation(self) -> int:
        return self._generation
