"""Errors raised while turning data into an artifact.

Every error says what was expected, what came in and where; the CLI prints the message and exits
without a traceback::

    TrainingError
     ├── ConfigError            an option is out of range or does not fit the data (ValueError)
     ├── DataError              the data cannot be trained on: column, row and problem named (ValueError)
     ├── TrainingDivergedError  the loss, a weight or a BN buffer became NaN or inf; nothing was written
     └── RankFailedError        one rank of a distributed run failed, so every rank stops; nothing was written
"""

from __future__ import annotations


class TrainingError(Exception):
    """Base class: this training run cannot produce an artifact."""


class ConfigError(TrainingError, ValueError):
    pass


class DataError(TrainingError, ValueError):
    pass


class TrainingDivergedError(TrainingError, RuntimeError):
    pass


class RankFailedError(TrainingError, RuntimeError):
    """Another rank of a distributed run failed (or this one did, unexpectedly); every rank stops."""

    def __init__(self, rank: int, world_size: int, message: str) -> None:
        super().__init__(f"rank {rank} of {world_size} failed: {message}")
        self.rank = rank  # the rank that failed
