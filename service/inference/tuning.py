"""Runtime tuning, process-wide or per thread: torch's thread count, glibc's allocator, TF32 on CUDA.

Each is idempotent; the predictor applies them at load and the runtime keeps the thread count in every
thread that runs a forward. Why each one pays is in docs/PERFORMANCE.md. torch is imported only by the
functions that tune it, so the lean runtime can use ``keep_freed_memory`` without it.
"""

from __future__ import annotations

import ctypes
import threading

_thread = threading.local()  # per-thread serving state: the torch thread count set there


def use_torch_threads(n: int) -> None:
    """Makes this OS thread's torch intra-op pool ``n`` threads, once per thread.

    torch's thread count is per OS thread: it must be set where forwards run (the event loop, the batcher's
    worker), not only in the loader thread, or they use one thread per core.
    """
    if getattr(_thread, "torch_threads", None) != n:
        import torch

        torch.set_num_threads(n)
        _thread.torch_threads = n


def keep_freed_memory() -> bool:
    """Tells glibc's malloc to keep freed blocks of up to 32 MiB for reuse; gives back whether it could.

    A large forward allocates and frees activations of a megabyte or so. By default glibc serves blocks that
    large with mmap, or trims them off the heap once freed, so the next request's forward faults in fresh
    pages, a large share of its time. With the thresholds raised, freed blocks are reused (PyTorch's CPU
    tuning guide makes the same point with jemalloc or tcmalloc). The cost: up to 512 MiB of freed memory
    may stay with the process rather than go back to the OS. Elsewhere than glibc (musl, macOS) nothing
    changes.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 512 << 20))


def full_float32_on_cuda() -> None:
    """Turns TF32 off for CUDA matmuls and cuDNN convolutions in this process.

    cuDNN convolutions use TF32 by default on Ampere and later: a 10-bit mantissa puts a CNN's answers about
    1e-3 away from the CPU's and breaks the 1e-5 fold check. Serving gives float32's answers on every device.
    """
    import torch

    # The legacy flags: torch 2.9's fp32_precision setters exist too, but mixing the two APIs makes torch
    # refuse to read either (RuntimeError), and a user's code may still read allow_tf32.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def use_blas_threads(n: int) -> None:
    """Makes numpy's BLAS (OpenBLAS, MKL) use ``n`` threads, process-wide: the lean runtime's matmuls.

    Unlike torch's, the BLAS thread pools are process-wide, so once at load is enough (threadpoolctl finds
    whichever BLAS numpy was built with).
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n, user_api="blas")
