"""scripts/gpu-check: its steps, its refusal without CUDA, and (slow) the whole check in its CPU mode."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(REPO_ROOT / "scripts" / "gpu-check")


def gpu_check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", SCRIPT, *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO_ROOT,
        env=os.environ | {"OMP_NUM_THREADS": "1"} | (env or {}),
    )


def test_the_dry_run_lists_the_cuda_tests_a_sync_bn_training_on_every_gpu_and_the_serving_check() -> None:
    result = gpu_check("--dry-run")

    assert result.returncode == 0, result.stderr
    steps = [line for line in result.stderr.splitlines() if line.startswith("[gpu-check] ")]
    gpus = max(torch.cuda.device_count(), 1)
    assert "pytest tests -k cuda" in steps[0]
    assert f"torchrun --nproc-per-node {gpus} -m training" in steps[1]
    assert "--device cuda --sync-bn" in steps[1] and "--bn-stats precise" in steps[1]
    assert steps[2].endswith(f" {gpus} cuda") and "nothing was run" in steps[3]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_refuses_and_points_to_the_cpu_mode() -> None:
    result = gpu_check()

    assert result.returncode == 2
    assert "sees no CUDA device" in result.stderr and "scripts/gpu-check --cpu" in result.stderr


def test_an_unknown_argument_is_refused_with_the_valid_ones() -> None:
    result = gpu_check("--gpus", "2")

    assert result.returncode == 2
    assert "unknown argument '--gpus'; expected --cpu, --dry-run or --help" in result.stderr


@pytest.mark.slow
def test_the_cpu_mode_trains_two_gloo_ranks_and_serves_the_artifact(tmp_path: Path) -> None:
    result = gpu_check("--cpu", env={"BNSERVE_GPU_CHECK_DIR": str(tmp_path)})

    assert result.returncode == 0, result.stderr[-3000:]
    assert "[gpu-check] passed (cpu, 2 rank(s))" in result.stderr
    manifest = json.loads((tmp_path / "digits" / "manifest.json").read_text())
    assert manifest["bn_statistics"]["kind"] == "precise" and manifest["bn_statistics"]["world_size"] == 2
    assert "canary probabilities within" in result.stdout
