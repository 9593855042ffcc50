"""Device selection, for training and serving alike.

pick_device("auto")    # CUDA when torch sees a device, else the CPU
pick_device("cuda:1")  # that device, or DeviceError when CUDA is not available
"""

from __future__ import annotations

import torch


class DeviceError(ValueError):
    """The device asked for does not exist on this machine."""


def pick_device(name: str) -> torch.device:
    """Gives back the device ``name`` asks for: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"expected a device auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"device {name!r} asked for but CUDA is not available (torch {torch.__version__}); use cpu"
        )
    return device
