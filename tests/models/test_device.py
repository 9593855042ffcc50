"""Device selection, shared by training and serving: auto picks CUDA when torch sees it, a missing device is
refused with a message that says what to use instead."""

from __future__ import annotations

import pytest
import torch

from models.device import DeviceError, pick_device


def test_auto_picks_cuda_exactly_when_torch_sees_a_device() -> None:
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_cpu_is_always_available() -> None:
    assert pick_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="refusal needs a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_a_device_is_refused_naming_the_alternative(name: str) -> None:
    with pytest.raises(DeviceError, match=rf"device '{name}' asked for but CUDA is not available .*use cpu"):
        pick_device(name)


def test_a_name_torch_does_not_know_is_refused_with_the_valid_ones() -> None:
    with pytest.raises(DeviceError, match=r"expected a device auto, cpu, cuda or cuda:N, got 'gpu0'"):
        pick_device("gpu0")


def test_training_and_serving_both_refuse_a_missing_cuda_device(tmp_path: object) -> None:
    if torch.cuda.is_available():
        pytest.skip("refusal needs a machine without CUDA")
    from training.engine import resolve_device
    from training.errors import ConfigError

    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")
