"""Command line: ``python -m models.export onnx ARTIFACT OUT [--triton DIR]``.

Writes the artifact's eval-mode network as ONNX to ``OUT`` (atomically), after onnxruntime has reproduced the
artifact's canary outputs with it; ``--triton DIR`` also writes ``DIR/<name>/1/model.onnx`` and
``DIR/<name>/config.pbtxt``. A refused artifact or a graph that does not verify prints one message to stderr
and exits with status 1, writing nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from models.artifact import load_artifact
from models.errors import ArtifactError
from models.export.onnx_graph import DEFAULT_OPSET, OnnxExport, export_onnx
from models.export.triton import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_QUEUE_DELAY_US, write_triton_repository


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m models.export",
        description="Export a bnserve artifact for another runtime.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{onnx}")
    onnx = commands.add_parser(
        "onnx",
        help="ONNX graph (onnxruntime, Triton), verified with onnxruntime",
        description="Write the eval-mode network (input standardization included, BN folded where it follows a "
        "Linear or Conv2d) as ONNX with a dynamic batch dimension, verified with onnxruntime.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    onnx.add_argument("artifact", type=Path, help="artifact directory")
    onnx.add_argument("out", type=Path, help="ONNX file to write, e.g. model.onnx")
    onnx.add_argument("--triton", type=Path, metavar="DIR", help="also write a Triton model repository here")
    onnx.add_argument(
        "--no-fold",
        dest="fold",
        action="store_false",
        help="keep every BN as an inference-mode ONNX BatchNormalization (the graph left unoptimized)",
    )
    onnx.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset version")
    onnx.add_argument(
        "--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE, help="Triton: max_batch_size"
    )
    onnx.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=DEFAULT_MAX_QUEUE_DELAY_US,
        help="Triton: dynamic_batching max_queue_delay_microseconds",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    try:
        artifact = load_artifact(args.artifact)
        exported = export_onnx(artifact, fold=args.fold, opset=args.opset)
        triton_dir = None
        if args.triton is not None:
            triton_dir = write_triton_repository(
                args.triton,
                artifact,
                exported.model,
                max_batch_size=args.max_batch_size,
                max_queue_delay_us=args.max_queue_delay_us,
            )
        write_file_atomically(args.out, exported.model)
    except (ArtifactError, OSError) as e:
        parser.exit(1, f"{parser.prog}: error: {e}\n")
    print_summary(args.out, exported, triton_dir)
    return 0


def print_summary(out: Path, exported: OnnxExport, triton_dir: Path | None) -> None:
    print(
        f"wrote {out} ({len(exported.model):,} bytes, opset {exported.opset}, outputs "
        f"{', '.join(exported.output_names)}; {exported.folded_bn} BN folded, {exported.unfolded_bn} kept)"
    )
    print(
        f"onnxruntime: canary outputs within {exported.canary_max_abs_diff:.3g} of the artifact's; "
        f"each row the same alone as in a batch (within {exported.batch_max_abs_diff:.3g}) and whatever its "
        "neighbours"
    )
    if triton_dir is not None:
        print(f"triton: {triton_dir / 'config.pbtxt'}, {triton_dir / '1' / 'model.onnx'}")


def write_file_atomically(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary sibling and a rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


if __name__ == "__main__":
    sys.exit(main())
