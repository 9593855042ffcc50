"""Training on several processes: torchrun's ranks, DDP, SyncBN, and one failing rank stopping them all.

    torchrun --nproc-per-node 2 -m training --dataset digits --out artifacts/digits

``train(cfg)`` joins a process group whenever the environment holds what torchrun sets (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): gloo on the CPU, NCCL on CUDA. Every rank
reads the same data and draws the same global batches; each trains on its share of every batch, so
``batch_size``, ``lr`` and ``epochs`` mean what they mean in one process. docs/DISTRIBUTED.md has the details.

A failure on one rank ends every rank: errors while preparing (options, data) are exchanged, so rank 0
reports the first failing rank's message; a rank failing mid-training records its message in the
rendezvous store, where a watchdog thread on every other rank finds it and ends that rank.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from training.errors import ConfigError, DataError, RankFailedError, TrainingDivergedError, TrainingError

T = TypeVar("T")
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# Collectives here take milliseconds; a rank silent this long is gone (the default is 30 minutes).
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=5)
# How long a failing rank keeps the rendezvous store up for the others to read its message.
FAILURE_GRACE_S = 10.0
FAILURE_KEY = "failure"  # "<rank>\n<message>" of the first rank that failed
RELEASED_KEY = "released"  # set by the failed rank once the others have read FAILURE_KEY
WATCH_INTERVAL_S = 0.5
STOP_WAIT_S = 5.0  # how long leaving the session waits for the watchdog thread to end
FAULT_VARIABLE = "BNSERVE_TEST_FAULT"  # for tests only: "<rank>:<step>:error|nan", see docs/DISTRIBUTED.md


@dataclass(frozen=True)
class Ranks:
    """Where this process stands among the processes training one network (world_size 1: alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    store: dist.Store | None = None  # this run's keys in the rendezvous store; None when not launched

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def launched(self) -> bool:
        return self.store is not None

    def device(self, device: torch.device) -> torch.device:
        """Gives back this rank's device: its own GPU (``cuda:LOCAL_RANK``) on CUDA."""
        if device.type == "cuda" and self.launched:
            return torch.device("cuda", self.local_rank)
        return device

    def local_rows(self, batch: torch.Tensor) -> torch.Tensor:
        """Gives back this rank's rows of a global batch: every ``world_size``-th, from ``rank`` on (as
        ``torch.utils.data.DistributedSampler`` shards), so the ranks' shares differ by at most one row."""
        return batch[self.rank :: self.world_size] if self.world_size > 1 else batch

    def loss_weight(self, local_rows: int, global_rows: int) -> float:
        """Gives back the factor on this rank's mean loss that makes DDP's average of the ranks' gradients
        the gradient of the mean loss over the whole global batch, however unevenly it split."""
        return local_rows * self.world_size / global_rows

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Gives back ``t`` summed over every rank, in place."""
        if self.launched:
            dist.all_reduce(t)
        return t

    def share_buffers(self, model: nn.Module) -> None:
        """Copies rank 0's buffers (BN statistics) to every rank, as DDP does before each training forward."""
        if self.launched:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def wrap(self, model: nn.Module) -> nn.Module:
        """Gives back ``model`` under DDP when launched, else ``model`` itself."""
        if not self.launched:
            return model
        device = next(model.parameters()).device
        return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

    def together(self, step: Callable[[], T]) -> T:
        """Gives back ``step()``'s result once it succeeded on every rank; raises on every rank if it failed
        on any (see ``agree``). ``step`` must make the same collectives on every rank, fail or not: none,
        or all of them before anything that can fail."""
        try:
            result = step()
        except Exception as error:
            self.agree(error)
            raise
        self.agree(None)
        return result

    def agree(self, error: BaseException | None) -> None:
        """Raises on every rank when ``error`` is set on any rank (call it on every rank at the same point).

        Rank 0 raises the first failing rank's error; the other ranks raise a ``RankFailedError`` naming it.
        """
        if not self.launched:
            if error is not None:
                raise error
            return
        messages: list[str | None] = [None] * self.world_size
        dist.all_gather_object(messages, None if error is None else describe(error))
        failed = [r for r, message in enumerate(messages) if message is not None]
        if not failed:
            return
        first = failed[0]
        if self.is_main and first == 0 and isinstance(error, TrainingError):
            agreed: TrainingError = type(error)(f"{self.name()}: {error}")
        else:
            agreed = RankFailedError(first, self.world_size, str(messages[first]))
        agreed.every_rank_knows = True  # type: ignore[attr-defined]
        raise agreed from error

    def name(self, rank: int | None = None) -> str:
        return f"rank {self.rank if rank is None else rank} of {self.world_size}"


ALONE = Ranks()


def describe(error: BaseException) -> str:
    """Gives back one line for ``error``: its message, with the type for errors that are not ours."""
    return str(error) if isinstance(error, TrainingError) else f"{type(error).__name__}: {error}"


def launched() -> bool:
    """True when torchrun (or a launcher setting the same variables) started this process."""
    return all(v in os.environ for v in LAUNCH_VARIABLES)


def launch_rank() -> int:
    """Gives back this process's rank as the launcher set it (0 when not launched)."""
    return int(os.environ.get("RANK", "0")) if launched() else 0


def reports(error: BaseException) -> bool:
    """True when this process should print ``error``: rank 0 reports every rank's failure, and a rank that
    failed on its own mid-training reports it too (rank 0 may not be there to); the others stay quiet."""
    if getattr(error, "reported", False):  # printed already, before the other ranks were let go
        return False
    return launch_rank() == 0 or getattr(error, "failed_here", False)


@contextmanager
def session(device: torch.device) -> Iterator[Ranks]:
    """Yields this process's ``Ranks`` inside a process group joined from torchrun's environment (``ALONE``
    when not launched), and leaves the group on the way out.

    An exception raised on this rank is recorded in the rendezvous store before it propagates; a watchdog
    thread on every other rank sees it within half a second and ends that rank (exit status 1), wherever
    it waits, rank 0 printing the failed rank's message first.
    """
    if not launched():
        yield ALONE
        return
    if dist.is_initialized():
        raise ConfigError(
            "a process group is already initialized: train() joins its own from torchrun's environment; "
            "call it before init_process_group (or after destroy_process_group)"
        )
    ranks = _join(device)
    watchdog = Watchdog(ranks)
    try:
        yield ranks
    except Exception as error:
        watchdog.stop()
        raise _stop(ranks, error) from error
    finally:
        watchdog.stop()
        dist.destroy_process_group()


def _join(device: torch.device) -> Ranks:
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)  # NCCL needs each rank on its own GPU before the first collective
    store, rank, world_size = next(dist.rendezvous("env://", timeout=COLLECTIVE_TIMEOUT))
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        store=store,
        rank=rank,
        world_size=world_size,
        timeout=COLLECTIVE_TIMEOUT,
    )
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    return Ranks(rank, world_size, local_rank, dist.PrefixStore(f"bnserve/{run_id}/", store))


class Watchdog:
    """Ends this process once another rank has recorded a failure (``FAILURE_KEY`` in the store).

    A thread, because the main thread may be inside a collective that never returns: gloo only notices a
    peer's death when its process exits, NCCL not until the timeout.
    """

    def __init__(self, ranks: Ranks) -> None:
        self.ranks = ranks
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="bnserve-rank-watchdog", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stops the watch and waits for the thread to end (at most a few store calls' time): a daemon thread
        still inside a store call when the interpreter exits is ended by Python as it takes the GIL back,
        which aborts the process ("terminate called without an active exception", SIGABRT) instead of
        letting it exit 0."""
        self.stopped.set()
        if self.thread is not threading.current_thread():
            self.thread.join(STOP_WAIT_S)

    def _watch(self) -> None:
        store = self.ranks.store
        assert store is not None
        while not self.stopped.wait(WATCH_INTERVAL_S):
            try:
                failure = store.get(FAILURE_KEY).decode() if store.check([FAILURE_KEY]) else None
            except RuntimeError:  # the store went away: the main thread's next collective fails too
                return
            if failure is None or self.stopped.is_set():
                continue
            rank, message = failure.split("\n", 1)
            if int(rank) == self.ranks.rank:
                continue
            if self.ranks.is_main:
                print(
                    f"python -m training: error: {RankFailedError(int(rank), self.ranks.world_size, message)}",
                    file=sys.stderr,
                    flush=True,
                )
            _count_done(store)
            # Exit only once the failed rank has printed its message and let go: torchrun ends every rank as
            # soon as one exits, and the store may live in the failed rank's process.
            _wait_for(lambda: store.check([RELEASED_KEY]), FAILURE_GRACE_S)
            os._exit(1)  # nothing is half-written: only rank 0 writes, atomically, after every rank finished


def _stop(ranks: Ranks, error: Exception) -> Exception:
    """Gives back the error this rank ends with, after telling the others (see ``session``)."""
    store = ranks.store
    assert store is not None
    if getattr(error, "every_rank_knows", False):  # from agree()
        return error
    if isinstance(error, TrainingDivergedError):
        # The losses are summed over ranks and the weights are shared: every rank diverged at once.
        return error if ranks.is_main else RankFailedError(0, ranks.world_size, str(error))
    try:
        first = store.compare_set(FAILURE_KEY, "", f"{ranks.rank}\n{describe(error)}").decode()
    except RuntimeError:  # the store went away with the rank that hosted it: that rank failed first
        return error
    rank, message = first.split("\n", 1)
    if int(rank) != ranks.rank:  # another rank failed first; this error follows from it
        _count_done(store)
        return RankFailedError(int(rank), ranks.world_size, message)
    if not isinstance(error, TrainingError):
        traceback.print_exc()  # an unexpected error: keep its traceback on the rank where it happened
    own: TrainingError
    if isinstance(error, TrainingError):
        own = type(error)(f"{ranks.name()}: {error}")
    else:
        own = RankFailedError(ranks.rank, ranks.world_size, describe(error))
    own.failed_here = True  # type: ignore[attr-defined]
    # Print before letting the others go: once one of them exits, torchrun ends this rank too.
    print(f"python -m training: error: {own}", file=sys.stderr, flush=True)
    own.reported = True  # type: ignore[attr-defined]
    # Wait for the others to read the message: the store may live in this process (rank 0 without
    # torchrun), and torchrun ends the other ranks as soon as this one exits.
    _wait_for(lambda: _count_done(store, 0) >= ranks.world_size - 1, FAILURE_GRACE_S)
    with contextlib.suppress(RuntimeError):
        store.set(RELEASED_KEY, "1")
    return own


def _count_done(store: dist.Store, add: int = 1) -> int:
    """Gives back how many ranks have stopped because of another's failure (after adding ``add``); a large
    number once the store is gone (its host stopped: nobody is left to wait for)."""
    try:
        return int(store.add("done", add))
    except RuntimeError:
        return sys.maxsize


def _hosts_store(ranks: Ranks) -> bool:
    """True when the rendezvous store lives in this process: rank 0, unless torchrun's agent hosts it."""
    return ranks.is_main and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"


def _wait_for(ready: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except RuntimeError:  # the store went away
            return
        time.sleep(0.05)


def check_batch_size(batch_size: int, ranks: Ranks) -> None:
    """Raises ``ConfigError`` when a global batch cannot give every rank the 2 rows BN needs."""
    if batch_size < 2 * ranks.world_size:
        raise ConfigError(
            f"batch_size is the global batch, shared by all {ranks.world_size} ranks: it must be at least "
            f"{2 * ranks.world_size} so that each rank's BN sees 2 rows, got {batch_size}"
        )


def check_same_data(features: np.ndarray, target: np.ndarray, ranks: Ranks) -> None:
    """Raises ``DataError`` on a rank whose training split differs from rank 0's (another file on its node)."""
    if not ranks.launched:
        return
    digest = hashlib.sha256(features.tobytes() + target.tobytes()).hexdigest()
    digests: list[str | None] = [None] * ranks.world_size
    dist.all_gather_object(digests, digest)
    if digest != digests[0]:
        raise DataError(
            f"this rank's training split (SHA-256 {digest[:12]}) differs from rank 0's ({str(digests[0])[:12]}): "
            "every rank must read the same data with the same --seed and --val-fraction"
        )


def check_sync_bn(sync_bn: bool, device: torch.device) -> None:
    """Raises ``ConfigError`` when SyncBatchNorm is asked for on a device where it cannot run."""
    if sync_bn and device.type != "cuda":
        raise ConfigError(
            f"sync_bn needs CUDA, but this run trains on {device.type}: PyTorch's SyncBatchNorm gathers batch "
            "statistics only on GPUs (NCCL), and on the CPU (gloo) its first training forward raises. Leave "
            "--sync-bn off (each rank then normalizes by its own share of the batch) and use --bn-stats precise "
            "to export population statistics of the whole training split"
        )


def convert_sync_batchnorm(model: nn.Module) -> dict[str, type[_BatchNorm]]:
    """Replaces every BN layer of ``model`` by a ``SyncBatchNorm`` holding the same tensors; gives back
    each replaced layer's name and class, for ``revert_sync_batchnorm``."""
    kinds = {name: type(m) for name, m in model.named_modules() if isinstance(m, _BatchNorm)}
    if nn.SyncBatchNorm.convert_sync_batchnorm(model) is not model:
        raise ConfigError("sync_bn needs a network whose top module is not itself a BN layer")
    return kinds


def revert_sync_batchnorm(model: nn.Module, kinds: dict[str, type[_BatchNorm]]) -> None:
    """Turns every ``SyncBatchNorm`` named in ``kinds`` back into the BN layer it replaced, same tensors."""
    for name, kind in kinds.items():
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        synced = parent.get_submodule(child_name)
        assert isinstance(synced, nn.SyncBatchNorm)
        plain = kind(synced.num_features, eps=synced.eps, momentum=synced.momentum, affine=synced.affine)
        plain.load_state_dict(synced.state_dict())
        plain.to(next(synced.buffers()).device).train(synced.training)
        setattr(parent, child_name, plain)


def install_test_fault(model: nn.Module, ranks: Ranks) -> None:
    """For tests only: makes one rank fail at one training step, as ``BNSERVE_TEST_FAULT`` says.

    ``<rank>:<step>:error`` raises at the start of that training step (1-based, counted over all epochs);
    ``<rank>:<step>:nan`` feeds that step NaN inputs.
    """
    spec = os.environ.get(FAULT_VARIABLE)
    if not spec:
        return
    rank, step, kind = spec.split(":")
    if int(rank) != ranks.rank:
        return
    steps = 0

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...] | None:
        nonlocal steps
        if not module.training:
            return None
        steps += 1
        if steps != int(step):
            return None
        if kind == "nan":
            return (args[0] * float("nan"),)
        raise RuntimeError(f"injected failure at training step {steps} ({FAULT_VARIABLE}={spec})")

    model.register_forward_pre_hook(hook)
