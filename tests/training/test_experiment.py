"""``python -m training.experiment --quick``: the scaling lesson and the inference hand-over, in numbers.

One quick run (a few seconds) is shared by the tests; they read what it printed and wrote, as a user would.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models.bn import batchnorm_layers
from models.layers import Standardize
from training.config import TrainConfig
from training.data import load_builtin, split_dataset
from training.experiment.cli import main
from training.experiment.handover import batch_statistics_forward, single_row_error
from training.experiment.variants import (
    LARGEST,
    SMALLEST,
    VARIANTS,
    build_variant,
    feature_ratio,
    rescaled,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict[str, Any]]:
    out_dir = tmp_path_factory.mktemp("experiment")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        main(["--quick", "--out", str(out_dir)])
    return out_dir, printed.getvalue(), json.loads((out_dir / "results.json").read_text())


def _summary(results: dict[str, Any], variant: str) -> dict[str, Any]:
    return next(s for s in results["summaries"] if s["variant"] == variant)


def _epochs_or_budget(results: dict[str, Any], variant: str) -> list[int]:
    """Epochs each seed needed to reach the target at the variant's best lr; one past the end if never."""
    s, cfg = _summary(results, variant), results["config"]
    runs = [r for r in results["runs"] if r["variant"] == variant and r["lr"] == s["lr"]]
    return [
        next((i + 1 for i, a in enumerate(r["val_accuracy"]) if a >= cfg["target"]), cfg["epochs"] + 1)
        for r in runs
    ]


def test_the_cli_prints_the_tables_and_writes_the_plots_and_results(
    quick_run: tuple[Path, str, dict[str, Any]],
) -> None:
    out_dir, printed, results = quick_run

    for name in ("curves.png", "gradient_ratio.png", "lr_grid.png", "handover.png"):
        assert (out_dir / name).read_bytes().startswith(PNG_MAGIC), name
    assert (out_dir / "tables.md").read_text().strip() in printed
    for v in VARIANTS:
        assert f"| {v.label} | {_summary(results, v.name)['lr']:g} |" in printed
    assert {r["variant"] for r in results["runs"]} == {v.name for v in VARIANTS}
    cfg = results["config"]
    assert len(results["runs"]) == len(VARIANTS) * len(cfg["lrs"]) * len(cfg["seeds"])


def test_each_variant_reports_the_best_learning_rate_of_the_grid(
    quick_run: tuple[Path, str, dict[str, Any]],
) -> None:
    results = quick_run[2]

    for v in VARIANTS:
        by_lr: dict[float, list[float]] = {}
        for r in results["runs"]:
            if r["variant"] == v.name:
                by_lr.setdefault(r["lr"], []).append(0.0 if r["diverged"] else r["val_accuracy"][-1])
        best = max(np.mean(accs) for accs in by_lr.values())
        assert np.mean(by_lr[_summary(results, v.name)["lr"]]) == pytest.approx(best)


def test_standardization_and_bn_reach_the_target_in_fewer_epochs_than_raw_features(
    quick_run: tuple[Path, str, dict[str, Any]],
) -> None:
    results = quick_run[2]

    assert sum(_epochs_or_budget(results, "standardize_bn")) < sum(_epochs_or_budget(results, "raw"))
    assert _summary(results, "standardize_bn")["reached"] == len(results["config"]["seeds"])


def test_the_first_layer_gradient_is_lopsided_on_raw_features_and_balanced_once_standardized(
    quick_run: tuple[Path, str, dict[str, Any]],
) -> None:
    results = quick_run[2]
    scale_ratio = feature_ratio(rescaled(load_builtin("breast_cancer")))

    raw = _summary(results, "raw")["grad_ratio"]
    # dL/dW[:, j] carries a factor x_j: the gradient ratio follows the features' own scale ratio.
    assert scale_ratio / 10 < raw < scale_ratio * 10
    for standardized in ("standardize", "standardize_bn"):
        assert 0.1 < _summary(results, standardized)["grad_ratio"] < 10
    # BN after the first Linear does not change what that Linear's weights see.
    assert _summary(results, "bn_before")["grad_ratio"] > scale_ratio / 10


def test_training_mode_bn_gives_a_single_row_one_answer_for_every_input_while_eval_mode_does_not(
    quick_run: tuple[Path, str, dict[str, Any]],
) -> None:
    one = next(r for r in quick_run[2]["handover"] if r["batch_size"] == 1)

    assert one["spread_batch_stats"] == 0.0
    assert one["spread_eval"] > 0.1
    assert one["accuracy_batch_stats"] < one["accuracy_eval"]


def test_eval_mode_answers_do_not_depend_on_the_batch_while_batch_statistics_do(
    quick_run: tuple[Path, str, dict[str, Any]],
) -> None:
    rows = quick_run[2]["handover"]

    assert [r["batch_size"] for r in rows] == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert max(r["eval_max_diff"] for r in rows) < 1e-5
    assert len({r["accuracy_eval"] for r in rows}) == 1
    assert rows[0]["tv_distance"] > 5 * rows[-1]["tv_distance"]
    assert rows[0]["label_agreement"] < rows[-1]["label_agreement"]


def test_the_printed_single_row_case_quotes_pytorchs_refusal(
    quick_run: tuple[Path, str, dict[str, Any]],
) -> None:
    printed, results = quick_run[1], quick_run[2]

    assert "Expected more than 1 value per channel when training" in results["single_row_error"]
    assert results["single_row_error"] in printed


def _small_bn_model() -> tuple[torch.nn.Sequential, torch.Tensor]:
    data = rescaled(load_builtin("breast_cancer"))
    train, _ = split_dataset(data, val_fraction=0.2, seed=0)
    cfg = TrainConfig(hidden=(16, 16), dropout=0.0, progress=False)
    standardize_bn = next(v for v in VARIANTS if v.name == "standardize_bn")
    model = build_variant(standardize_bn, cfg, train)
    with torch.no_grad():  # non-trivial BN statistics and affine parameters
        for _, bn in batchnorm_layers(model):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    return model.eval(), torch.from_numpy(train.features[:64])


def test_batch_statistics_forward_is_pytorch_training_mode_without_touching_the_running_statistics() -> None:
    model, x = _small_bn_model()
    before = copy.deepcopy(model.state_dict())

    ours = batch_statistics_forward(model, x)
    with torch.no_grad():
        theirs = copy.deepcopy(model).train()(x)

    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    for key, t in model.state_dict().items():
        assert torch.equal(t, before[key]), key


def test_with_batch_statistics_every_single_row_comes_out_as_bn_bias_alone() -> None:
    model, x = _small_bn_model()

    with torch.no_grad():
        answers = torch.cat([batch_statistics_forward(model, row) for row in x.split(1)])
        eval_answers = model(x)

    assert torch.equal(answers, answers[:1].expand_as(answers))
    assert eval_answers.std(dim=0).min() > 0
    assert "Expected more than 1 value per channel" in (single_row_error(model, x) or "")


def test_rescaled_features_span_the_documented_range_and_keep_their_shape() -> None:
    original = load_builtin("breast_cancer")
    data = rescaled(original)

    magnitude = np.abs(data.features.astype(np.float64)).mean(axis=0)
    np.testing.assert_allclose(magnitude[[0, -1]], [SMALLEST, LARGEST], rtol=1e-5)
    assert np.all(np.diff(magnitude) > 0)
    nonzero = original.features != 0
    ratio = np.where(nonzero, data.features / np.where(nonzero, original.features, 1), np.nan)  # (N, F)
    assert np.all(np.nanstd(ratio, axis=0) < 1e-5 * np.nanmean(ratio, axis=0))  # one constant per column
    np.testing.assert_array_equal(data.target, original.target)


def test_each_variant_builds_the_network_its_name_describes() -> None:
    data = rescaled(load_builtin("breast_cancer"))
    train, _ = split_dataset(data, val_fraction=0.2, seed=0)
    cfg = TrainConfig(hidden=(8, 8), progress=False)

    for v in VARIANTS:
        model = build_variant(v, cfg, train)
        names = [name for name, _ in model.named_children()]
        norm = model.get_submodule("input_norm")
        assert isinstance(norm, Standardize)
        assert bool((norm.std != 1).any()) is v.standardize, v.name
        has_bn = any(True for _ in batchnorm_layers(model))
        assert has_bn is (v.bn_position is not None), v.name
        if v.bn_position == "after_activation":
            assert names.index("bn1") == names.index("act1") + 1
        if v.bn_position == "before_activation":
            assert names.index("bn1") == names.index("act1") - 1
