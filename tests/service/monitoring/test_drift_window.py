"""The drift window's statistics equal numpy's over the same rows, for 1d and conv layers, folded or not."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models import load_artifact
from models.bn import batchnorm_layers, model_bn_fingerprint
from service.inference.predictor import Predictor
from service.monitoring.drift import DriftMonitor, RowWindow
from tests.service.serving import loaded_predictor

BATCH_SIZES = [1, 7, 64, 250, 3, 130, 301, 40]  # 796 rows: the 300-row window wraps and drops whole batches


def serve(artifact_dir: Path, **options: Any) -> Predictor:
    return loaded_predictor(artifact_dir, **options)


def traffic(predictor: Predictor, seed: int = 0) -> np.ndarray:
    """Sends batches of varied sizes through the serving forward; gives back all their rows, in order."""
    artifact = predictor.require_ready()
    std = artifact.manifest.input_standardization
    rng = np.random.default_rng(seed)
    rows = (
        np.asarray(std.mean) + rng.normal(size=(sum(BATCH_SIZES), len(std.mean))) * np.asarray(std.std)
    ).astype(np.float32)
    start = 0
    for size in BATCH_SIZES:
        predictor.runtime.forward(rows[start : start + size])
        start += size
    return rows


def bn_inputs(predictor: Predictor, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Gives back what each BN layer of the *unfolded* torch network receives for ``rows``, and the raw input
    (the lean runtime's predictor holds no torch network: it is loaded here)."""
    artifact = predictor.require_ready()
    model = (
        artifact.model if hasattr(artifact, "model") else load_artifact(Path(predictor.artifact_dir)).model
    )
    seen: dict[str, np.ndarray] = {"input": rows.astype(np.float64)}
    hooks = [
        bn.register_forward_hook(
            lambda _, args, __, name=name: seen.__setitem__(name, args[0].double().numpy())
        )
        for name, bn in batchnorm_layers(model)
    ]
    try:
        with torch.inference_mode():
            model(torch.from_numpy(rows))
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def weighted_mean_var(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gives back numpy's per-channel mean and population variance: over N, or over N*H*W for conv."""
    axes = (0, 2, 3) if values.ndim == 4 else (0,)
    w = np.broadcast_to(weights.reshape(-1, *([1] * (values.ndim - 1))), values.shape)
    mean = np.average(values, axis=axes, weights=w)
    centered = values - mean.reshape(1, -1, *([1] * (values.ndim - 2)))
    return mean, np.average(centered**2, axis=axes, weights=w)


@pytest.mark.parametrize("runtime", ["torch", "lean"])  # torch tensors kept, numpy rows staged in a buffer
@pytest.mark.parametrize("fold_bn", [True, False], ids=["folded", "unfolded"])
@pytest.mark.parametrize("kind", ["breast_cancer", "digits"], ids=["mlp_1d", "cnn_2d"])
def test_the_row_window_holds_exactly_the_last_rows(
    kind: str, fold_bn: bool, runtime: str, request: pytest.FixtureRequest
) -> None:
    predictor = serve(
        request.getfixturevalue(f"{kind}_artifact"), drift_window=300, fold_bn=fold_bn, runtime=runtime
    )
    rows = traffic(predictor)
    assert predictor.drift is not None
    window_rows, sites = predictor.drift.compare()
    assert window_rows == 300 and predictor.drift.rows_seen == len(rows)

    weights = np.zeros(len(rows))
    weights[-300:] = 1.0
    expected = bn_inputs(predictor, rows)
    assert [s.site.name for s in sites] == list(expected)  # the input, then every BN layer in network order
    for site in sites:
        mean, var = weighted_mean_var(expected[site.site.name], weights)
        torch.testing.assert_close(site.mean, mean, rtol=1e-5, atol=1e-5, msg=f"{site.site.name} mean")
        torch.testing.assert_close(site.var, var, rtol=1e-5, atol=1e-6, msg=f"{site.site.name} var")


@pytest.mark.parametrize("kind", ["breast_cancer", "digits"], ids=["mlp_1d", "cnn_2d"])
def test_the_decay_window_weighs_rows_by_their_half_life(kind: str, request: pytest.FixtureRequest) -> None:
    predictor = serve(
        request.getfixturevalue(f"{kind}_artifact"), drift_window_mode="decay", drift_decay=100.0
    )
    rows = traffic(predictor)
    assert predictor.drift is not None
    window_rows, sites = predictor.drift.compare()

    age = np.arange(len(rows) - 1, -1, -1)
    weights = 0.5 ** (age / 100.0)
    assert window_rows == pytest.approx(weights.sum() ** 2 / (weights**2).sum())  # Kish's effective rows
    expected = bn_inputs(predictor, rows)
    for site in sites:
        mean, var = weighted_mean_var(expected[site.site.name], weights)
        torch.testing.assert_close(site.mean, mean, rtol=1e-5, atol=1e-5, msg=f"{site.site.name} mean")
        torch.testing.assert_close(site.var, var, rtol=1e-5, atol=1e-6, msg=f"{site.site.name} var")


def test_folding_does_not_change_what_the_monitor_reports(breast_cancer_artifact: Path) -> None:
    folded, unfolded = serve(breast_cancer_artifact), serve(breast_cancer_artifact, fold_bn=False)
    traffic(folded), traffic(unfolded)
    assert folded.drift is not None and unfolded.drift is not None
    a, b = folded.drift.report(), unfolded.drift.report()
    assert a["score"] == pytest.approx(b["score"], rel=1e-4)
    for la, lb in zip(a["layers"], b["layers"], strict=True):
        assert la["score"] == pytest.approx(lb["score"], rel=1e-4, abs=1e-6)


def test_the_monitor_never_writes_the_frozen_statistics(breast_cancer_artifact: Path) -> None:
    predictor = serve(breast_cancer_artifact)
    artifact = predictor.require_ready()
    traffic(predictor)
    traffic(predictor, seed=1)
    assert predictor.drift is not None
    predictor.drift.report()
    assert model_bn_fingerprint(artifact.model) == artifact.bn_fingerprint


@pytest.mark.parametrize("runtime", ["torch", "lean"])
@pytest.mark.parametrize("mode", ["rows", "decay"])
def test_forwards_on_several_threads_at_once_lose_no_row(
    mode: str, runtime: str, breast_cancer_artifact: Path
) -> None:
    # The batcher runs small batches on the event loop while a large one runs in its worker thread.
    predictor = serve(
        breast_cancer_artifact, drift_window=4096, drift_window_mode=mode, drift_decay=1e9, runtime=runtime
    )
    std = predictor.require_ready().manifest.input_standardization
    rng = np.random.default_rng(0)
    batches = [
        (np.asarray(std.mean) + rng.normal(size=(size, len(std.mean))) * np.asarray(std.std)).astype(
            np.float32
        )
        for size in [1, 300, 5, 64, 700, 2, 33, 400] * 2  # 3010 rows: all fit in the window
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(predictor.runtime.forward, batches))
    rows = np.concatenate(batches)

    assert predictor.drift is not None and predictor.drift.error is None
    assert predictor.drift.rows_seen == len(rows)
    window_rows, sites = predictor.drift.compare()
    assert window_rows == pytest.approx(len(rows))  # a half-life of 1e9 rows: every weight is ~1
    expected = bn_inputs(predictor, rows)
    for site in sites:  # the order rows arrived in does not matter to an unweighted mean
        mean, var = weighted_mean_var(expected[site.site.name], np.ones(len(rows)))
        torch.testing.assert_close(site.mean, mean, rtol=1e-4, atol=1e-5, msg=f"{site.site.name} mean")
        torch.testing.assert_close(site.var, var, rtol=1e-4, atol=1e-6, msg=f"{site.site.name} var")


def test_a_network_with_an_in_place_layer_is_refused_since_kept_activations_would_change(
    breast_cancer_artifact: Path,
) -> None:
    artifact = load_artifact(breast_cancer_artifact)
    relu = next(m for m in artifact.model.modules() if isinstance(m, torch.nn.ReLU))
    relu.inplace = True
    with pytest.raises(ValueError, match="without in-place layers"):
        DriftMonitor.for_artifact(artifact, RowWindow(100), min_rows=10, threshold=1.5)


def test_what_the_window_keeps_does_not_change_as_the_network_computes_more(
    breast_cancer_artifact: Path,
) -> None:
    # The window keeps the forward's own activations, by reference: later forwards must not touch them.
    predictor = serve(breast_cancer_artifact, drift_window=2000)
    traffic(predictor)
    assert predictor.drift is not None and predictor.serving_model is not None
    _, before = predictor.drift.compare()
    with torch.inference_mode():
        for seed in range(5):
            predictor.serving_model(torch.randn(301, 30, generator=torch.Generator().manual_seed(seed)) * 1e3)
    _, after = predictor.drift.compare()
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a.mean, b.mean)
        np.testing.assert_array_equal(a.var, b.var)
