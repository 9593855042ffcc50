"""The forward pass alone, in process, one thread: torch, the lean numpy network and onnxruntime.

    python -m bench.forward                      # the benchmark artifact (30-256-256-2 MLP), batches 1, 256, 1024
    python -m bench.forward --model artifacts/digits --batches 1,64

Also times, each in a fresh interpreter, what a cold start pays before its first answer: importing torch and
loading the artifact, loading it with the lean runtime, importing onnxruntime and opening a session. The
onnxruntime rows need the ``onnx`` and ``onnxruntime`` packages (not dependencies of bnserve; skipped with a
message when absent): the graph is exported here from the folded torch network. docs/PERFORMANCE.md
reports these numbers and why the lean runtime computes with numpy.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import io
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from service.predictor import keep_freed_memory

from bench.check import sample_rows
from bench.serve import DEFAULT_MODEL, ensure_artifact
from models import Artifact, fold_batchnorm
from models.lean import fold, load_lean_artifact

ROOT = Path(__file__).resolve().parent.parent


def best_seconds(fn: Callable[[], object], *, repeats: int = 9, budget: float = 0.1) -> float:
    """The fastest of ``repeats`` timed loops of about ``budget`` seconds each: each runtime's best."""
    for _ in range(5):
        fn()
    t0 = time.perf_counter()
    fn()
    n = max(3, round(budget / max(time.perf_counter() - t0, 1e-7)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n)
    return min(times)


def onnx_session(artifact: Artifact) -> Callable[[np.ndarray], object] | str:
    """Gives back a one-thread onnxruntime run of the folded network, or why there is none."""
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        return "skipped: the onnx and onnxruntime packages are not installed"
    import onnxruntime as ort

    graph = io.BytesIO()
    x = torch.zeros(1, len(artifact.manifest.feature_names))
    torch.onnx.export(
        fold_batchnorm(artifact.model),
        (x,),
        graph,  # type: ignore[arg-type]  # the TorchScript exporter writes to a file object too
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(graph.getvalue(), options, providers=["CPUExecutionProvider"])
    return lambda rows: session.run(None, {"input": rows})


def forward_rates(artifact: Artifact, batches: list[int]) -> dict[str, dict[int, float]]:
    """Gives back rows/s per runtime and batch size, one thread each."""
    keep_freed_memory()
    torch.set_num_threads(1)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # numpy's BLAS, like the lean runtime serves
    lean = load_lean_artifact(artifact.path)
    runtimes: dict[str, Callable[[np.ndarray], object]] = {
        "torch unfolded": lambda x: artifact.model(torch.from_numpy(x)),
        "torch folded": (lambda net: lambda x: net(torch.from_numpy(x)))(fold_batchnorm(artifact.model)),
        "numpy unfolded": lean.network,
        "numpy folded": fold(lean)[0],
    }
    session = onnx_session(artifact)
    if isinstance(session, str):
        print(f"onnxruntime {session}")
    else:
        runtimes["onnxruntime folded"] = session
    rows = sample_rows(artifact, max(batches))
    rates: dict[str, dict[int, float]] = {}
    with torch.inference_mode():
        for name, fn in runtimes.items():
            rates[name] = {b: b / best_seconds(functools.partial(fn, rows[:b])) for b in batches}
    return rates


COLD = {
    "torch: import, load_artifact, fold": """
        import torch, models
        a = models.load_artifact(PATH); models.fold_batchnorm(a.model)
    """,
    "lean: import, load_lean_artifact, fold": """
        import models.lean
        models.lean.fold(models.lean.load_lean_artifact(PATH))
    """,
    "onnxruntime: import, session": """
        import onnxruntime
        onnxruntime.InferenceSession(GRAPH, providers=["CPUExecutionProvider"])
    """,
}


def cold_seconds(artifact: Artifact) -> dict[str, float | str]:
    """Gives back the best of 3 fresh interpreters for each cold start in ``COLD``, past Python's own start."""
    out: dict[str, float | str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        graph = Path(tmp) / "model.onnx"
        have_ort = importlib.util.find_spec("onnxruntime") is not None
        if have_ort:
            x = torch.zeros(1, len(artifact.manifest.feature_names))
            torch.onnx.export(fold_batchnorm(artifact.model), (x,), str(graph), dynamo=False)
        for name, body in COLD.items():
            if name.startswith("onnxruntime") and not have_ort:
                out[name] = "skipped (not installed)"
                continue
            code = "import time\nt0 = time.perf_counter()\n" + textwrap.dedent(body)
            code += "print(time.perf_counter() - t0)\n"
            code = code.replace("PATH", repr(str(artifact.path))).replace("GRAPH", repr(str(graph)))
            times = [
                float(
                    subprocess.run(
                        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
                    ).stdout
                )
                for _ in range(3)
            ]
            out[name] = min(times)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.forward", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=str(DEFAULT_MODEL), help="artifact directory (trained there if missing)"
    )
    parser.add_argument("--batches", default="1,256,1024", help="batch sizes, comma-separated")
    args = parser.parse_args(argv)
    artifact = ensure_artifact(Path(args.model))
    batches = [int(b) for b in args.batches.split(",")]
    rates = forward_rates(artifact, batches)
    print(f"\nin-process forward, one thread, rows/s ({artifact.manifest.name!r}, {artifact.path})\n")
    print("| runtime | " + " | ".join(f"batch {b}" for b in batches) + " |")
    print("|---|" + "---:|" * len(batches))
    for name, by_batch in rates.items():
        cells = [f"{by_batch[b]:,.0f} ({1e6 * b / by_batch[b]:.1f} µs)" for b in batches]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\ncold start in a fresh interpreter, best of 3 (s):")
    for name, seconds in cold_seconds(artifact).items():
        print(f"  {name}: {seconds if isinstance(seconds, str) else f'{seconds:.3f}'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
