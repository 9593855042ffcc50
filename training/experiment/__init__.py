"""The scaling experiment: why bnserve standardizes inputs, normalizes batches and serves frozen statistics.

python -m training.experiment                      # the documented run (docs/EXPERIMENT.md)
python -m training.experiment --quick --out /tmp/x # seconds, for a look or a test

from training.experiment import ExperimentConfig, run_experiment
result = run_experiment(ExperimentConfig.quick())
"""

from __future__ import annotations

from training.experiment.runner import ExperimentConfig, ExperimentResult, run_experiment

__all__ = ["ExperimentConfig", "ExperimentResult", "run_experiment"]
