"""``python -m training.experiment --help``"""

from __future__ import annotations

from training.experiment.cli import main

main()
