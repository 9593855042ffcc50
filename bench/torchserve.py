"""TorchServe serving the same artifact with dynamic batching: the platform bnserve is held against.

    python -m bench.torchserve --model DIR --port 8004 --batch-size 16 --max-batch-delay-ms 1

Needs ``torchserve`` and ``torch-model-archiver`` on PATH and Java 17 or later (``java``); ``available()``
says what is missing, and the benchmark skips TorchServe with that message. The handler answers bnserve's own
JSON (``{"instances": [...]}`` in, ``{"predictions": [...]}`` out) from the folded network, one thread per
worker, one worker (the same single core bnserve gets); ``/ping`` is its readiness.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL_NAME = "bnserve"
READY_PATH = "/ping"
PREDICT_PATH = f"/predictions/{MODEL_NAME}"

HANDLER = '''
import json
import os

import torch

from models import fold_batchnorm, load_artifact

torch.set_num_threads(1)
_artifact = load_artifact(os.environ["BNSERVE_BENCH_MODEL"])
_net = fold_batchnorm(_artifact.model)
_labels = _artifact.manifest.class_labels


def _decoded(body):
    return json.loads(body) if isinstance(body, (bytes, bytearray, str)) else body


def handle(data, context):
    """One call per batch TorchServe formed: each request's rows, one forward, each caller its own rows."""
    if data is None:
        return None
    # TorchServe hands over a JSON body already decoded (a dict); any other body as bytes.
    bodies = [_decoded(item.get("body") or item.get("data")) for item in data]
    rows = [body["instances"] for body in bodies]
    with torch.inference_mode():
        out = _net(torch.tensor([r for rs in rows for r in rs], dtype=torch.float32))
        if _labels is not None:
            out = torch.softmax(out, dim=1)
    answers, start = [], 0
    for rs in rows:
        part = out[start : start + len(rs)].tolist()
        start += len(rs)
        if _labels is None:
            answers.append({"predictions": [{"value": p[0]} for p in part]})
        else:
            answers.append({"predictions": [
                {"label": _labels[max(range(len(p)), key=p.__getitem__)], "probabilities": dict(zip(_labels, p))}
                for p in part
            ]})
    return answers
'''


def _path() -> str:
    """PATH with this Python's own bin directory first: a virtual environment's tools are found (and its
    Python runs TorchServe's workers) when it is used without being activated (``.venv/bin/python -m ...``)."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def available() -> str | None:
    """Gives back None when TorchServe can run here, else what is missing."""
    path = _path()
    missing = [
        t for t in ("torchserve", "torch-model-archiver", "java") if shutil.which(t, path=path) is None
    ]
    if missing:
        return f"TorchServe skipped: {', '.join(missing)} not installed (pip install torchserve torch-model-archiver; Java 17)"
    version = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)', version)
    if not match or int(match.group(1)) < 17:
        return f"TorchServe skipped: it needs Java 17 or later, found {version.strip().splitlines()[:1]}"
    return None


def archive(model_dir: Path, store: Path) -> None:
    handler = store / "handler.py"
    handler.write_text(HANDLER)
    subprocess.run(
        [
            shutil.which("torch-model-archiver", path=_path()) or "torch-model-archiver",
            "--model-name",
            MODEL_NAME,
            "--version",
            "1",
            "--handler",
            str(handler),
            "--export-path",
            str(store),
            "--force",
        ],
        check=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.torchserve", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="artifact directory")
    parser.add_argument("--port", type=int, default=8004)
    parser.add_argument(
        "--batch-size", type=int, default=16, help="TorchServe's dynamic batching: most requests"
    )
    parser.add_argument("--max-batch-delay-ms", type=int, default=1, help="how long a batch waits to fill")
    args = parser.parse_args()
    if reason := available():
        raise SystemExit(reason)
    store = Path(tempfile.mkdtemp(prefix="bnserve-torchserve-"))
    archive(Path(args.model), store)
    config = store / "config.properties"
    config.write_text(
        f"inference_address=http://127.0.0.1:{args.port}\n"
        f"management_address=http://127.0.0.1:{args.port + 1}\n"
        f"metrics_address=http://127.0.0.1:{args.port + 2}\n"
        # Ports of their own for gRPC and the workers' sockets too: the benchmark runs three at once.
        f"grpc_inference_port={args.port + 3}\n"
        f"grpc_management_port={args.port + 4}\n"
        f"initial_worker_port={args.port + 5}\n"
        "default_workers_per_model=1\n"
        # Its fastest: metrics and logs written off the request path, no host metrics collector.
        "async_logging=true\n"
        "disable_system_metrics=true\n"
        "disable_token_authorization=true\n"
        "enable_envvars_config=true\n"
        f"load_models={MODEL_NAME}.mar\n"
        f'models={{"{MODEL_NAME}": {{"1": {{"marName": "{MODEL_NAME}.mar", "minWorkers": 1, "maxWorkers": 1, '
        f'"batchSize": {args.batch_size}, "maxBatchDelay": {args.max_batch_delay_ms}}}}}}}\n'
    )
    env = {
        **os.environ,
        "BNSERVE_BENCH_MODEL": str(Path(args.model).resolve()),
        "PYTHONPATH": str(ROOT),
        "PATH": _path(),
        # TorchServe keeps its pid file in the temporary directory and refuses to start while another
        # TorchServe's is there: each instance (the benchmark runs three at once) gets its own.
        "TMPDIR": str(store),
        # Its logs (by default logs/ in the working directory, the checkout) go with the rest of its files.
        "LOG_LOCATION": str(store / "logs"),
        "METRICS_LOCATION": str(store / "logs"),
    }
    command = [
        shutil.which("torchserve", path=env["PATH"]) or "torchserve",
        "--start",
        "--foreground",
        "--ncs",
        "--model-store",
        str(store),
        "--ts-config",
        str(config),
    ]
    # The benchmark stops this process group with SIGTERM: exit through ``finally`` so the store goes too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        code = subprocess.run(command, env=env).returncode
    finally:
        shutil.rmtree(store, ignore_errors=True)  # the archive and TorchServe's logs (100 MB a run)
    sys.exit(code)


if __name__ == "__main__":
    main()
