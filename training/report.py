"""``report.html`` and its PNGs: a training run a person can look at, stored inside the artifact.

    files = render_report(model, history, name="breast_cancer", feature_names=..., metrics=...)
    save_artifact(..., files={"history.json": ..., **files})     # checksummed like the rest

The page shows the loss and metric curves per epoch, each BN layer's final statistics per channel
(running mean ± one running std, gamma and beta) and its running statistics' trajectory, and the input
standardization per feature. It links its PNGs by relative name, so it opens from the artifact directory.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.ticker import MaxNLocator
from torch import nn

from models.bn import batchnorm_layers, model_bn_fingerprint
from models.history import TrainingHistory
from models.layers import Standardize
from training.plots import figure, png_bytes

REPORT_FILE = "report.html"
CURVES_PNG = "report-curves.png"
BN_PNG = "report-bn.png"
TRAJECTORY_PNG = "report-bn-trajectory.png"
INPUT_PNG = "report-input.png"


def curves_png(history: TrainingHistory) -> bytes:
    """Loss (train and val) and the headline metric per epoch."""
    epochs = [e.epoch for e in history.epochs]
    fig, (loss_ax, metric_ax) = figure(ncols=2)
    loss_ax.plot(epochs, [e.train["loss"] for e in history.epochs], "o-", ms=3, label="train (running)")
    loss_ax.plot(epochs, [e.val["loss"] for e in history.epochs], "o-", ms=3, label="validation (eval mode)")
    loss_ax.set(xlabel="epoch", ylabel="loss", yscale="log")
    loss_ax.legend(fontsize=8)
    metric = history.metric
    if all(metric in e.train for e in history.epochs):
        metric_ax.plot(epochs, [e.train[metric] for e in history.epochs], "o-", ms=3, label="train (running)")
    metric_ax.plot(
        epochs, [e.val[metric] for e in history.epochs], "o-", ms=3, label="validation (eval mode)"
    )
    metric_ax.set(xlabel="epoch", ylabel=metric)
    metric_ax.legend(fontsize=8)
    for ax in (loss_ax, metric_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return png_bytes(fig)


def _bn_layers(model: nn.Module) -> list[tuple[str, dict[str, np.ndarray]]]:
    layers = []
    for name, bn in batchnorm_layers(model):
        if bn.running_mean is None or bn.running_var is None:
            continue
        c = bn.num_features
        stats = {
            "running_mean": bn.running_mean.detach().cpu().double().numpy(),
            "running_std": (bn.running_var.detach().cpu().double()).sqrt().numpy(),
            "weight": bn.weight.detach().cpu().double().numpy() if bn.affine else np.ones(c),
            "bias": bn.bias.detach().cpu().double().numpy() if bn.affine else np.zeros(c),
        }
        layers.append((name, stats))
    return layers


def bn_png(model: nn.Module) -> bytes | None:
    """Per BN layer and channel: running mean ± one running std, and gamma (weight) and beta (bias)."""
    layers = _bn_layers(model)
    if not layers:
        return None
    fig, axes = figure(ncols=2, nrows=len(layers), height=2.8)
    for i, (name, s) in enumerate(layers):
        stats_ax, affine_ax = axes[2 * i], axes[2 * i + 1]
        channels = np.arange(len(s["running_mean"]))
        mean, std = s["running_mean"], s["running_std"]
        stats_ax.fill_between(channels, mean - std, mean + std, alpha=0.3, step="mid", label="± running std")
        stats_ax.plot(channels, mean, drawstyle="steps-mid", linewidth=1, label="running mean")
        stats_ax.set(title=f"{name}: frozen statistics", xlabel="channel")
        stats_ax.legend(fontsize=7)
        affine_ax.plot(channels, s["weight"], drawstyle="steps-mid", linewidth=1, label="gamma (weight)")
        affine_ax.plot(channels, s["bias"], drawstyle="steps-mid", linewidth=1, label="beta (bias)")
        affine_ax.set(title=f"{name}: learned scale and shift", xlabel="channel")
        affine_ax.legend(fontsize=7)
    return png_bytes(fig)


def trajectory_png(history: TrainingHistory) -> bytes | None:
    """Per BN layer, epoch by epoch: the channels' mean running mean and running variance, and how far
    the running mean still moved (RMS change in running standard deviations)."""
    if not history.batchnorm:
        return None
    fig, (mean_ax, var_ax, change_ax) = figure(ncols=3, width=4.2)
    for layer in history.batchnorm:
        epochs = [p.epoch for p in layer.trajectory]
        mean_ax.plot(epochs, [p.running_mean.mean for p in layer.trajectory], label=layer.name)
        mean_ax.fill_between(
            epochs,
            [p.running_mean.min for p in layer.trajectory],
            [p.running_mean.max for p in layer.trajectory],
            alpha=0.15,
        )
        var_ax.plot(epochs, [p.running_var.mean for p in layer.trajectory], label=layer.name)
        change_ax.plot(epochs, [max(p.mean_change, 1e-12) for p in layer.trajectory], label=layer.name)
    mean_ax.set(title="running_mean (channel mean, min-max)", xlabel="epoch")
    var_ax.set(title="running_var (channel mean)", xlabel="epoch", yscale="log")
    change_ax.set(title="running_mean change per epoch (in stds)", xlabel="epoch", yscale="log")
    for ax in (mean_ax, var_ax, change_ax):
        ax.legend(fontsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return png_bytes(fig)


def input_png(mean: np.ndarray, std: np.ndarray, feature_names: Sequence[str]) -> bytes:
    """The input standardization per feature: |mean| and std on a log axis."""
    n = len(feature_names)
    fig, (ax,) = figure(width=7.0, height=max(2.5, 0.16 * n + 1))
    y = np.arange(n)
    ax.barh(y - 0.2, np.maximum(np.abs(mean), 1e-12), height=0.4, label="|mean|")
    ax.barh(y + 0.2, np.maximum(std, 1e-12), height=0.4, label="std")
    ax.set_yticks(y, list(feature_names), fontsize=6 if n > 40 else 7)
    ax.invert_yaxis()
    ax.set(xscale="log", title="input standardization, (x - mean) / std per feature")
    ax.legend(fontsize=8)
    return png_bytes(fig)


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        return html.escape(f"{v:.6g}" if isinstance(v, float) else str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:72em;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}code{background:#f3f3f3;padding:0 .2em}"""


def render_report(
    model: nn.Module,
    history: TrainingHistory,
    *,
    name: str,
    feature_names: Sequence[str],
    class_labels: Sequence[str] | None,
    metrics: dict[str, float],
    training: dict[str, Any],
) -> dict[str, bytes]:
    """Gives back ``report.html`` and its PNGs by file name, for the artifact's extra ``files``."""
    norm = model.get_submodule("input_norm")
    assert isinstance(norm, Standardize)
    mean, std = norm.mean.detach().cpu().double().numpy(), norm.std.detach().cpu().double().numpy()
    files = {CURVES_PNG: curves_png(history), INPUT_PNG: input_png(mean, std, feature_names)}
    if (png := bn_png(model)) is not None:
        files[BN_PNG] = png
    if (png := trajectory_png(history)) is not None:
        files[TRAJECTORY_PNG] = png

    metric_names = sorted({k for e in history.epochs for k in (*e.train, *e.val)})
    epoch_rows = [
        [e.epoch, e.steps, round(e.seconds, 2)]
        + [e.train.get(k, "") for k in metric_names]
        + [e.val.get(k, "") for k in metric_names]
        for e in history.epochs
    ]
    epoch_header = (
        ["epoch", "steps", "seconds"]
        + [f"train {k}" for k in metric_names]
        + [f"val {k}" for k in metric_names]
    )
    bn_rows = []
    for layer_name, s in _bn_layers(model):
        bn_rows.append(
            [layer_name, len(s["running_mean"])]
            + [
                float(f(s[k]))
                for k in ("running_mean", "running_std", "weight", "bias")
                for f in (np.min, np.max)
            ]
        )
    bn_header = ["layer", "channels"] + [
        f"{k} {f}" for k in ("running mean", "running std", "gamma", "beta") for f in ("min", "max")
    ]
    input_rows = [[f, float(m), float(s)] for f, m, s in zip(feature_names, mean, std, strict=True)]
    with torch.no_grad():
        fingerprint = model_bn_fingerprint(model)
    title = html.escape(f"{name}: training report")
    sections = [
        f"<h1>{title}</h1>",
        f"<p>{html.escape(history.task)}, {len(feature_names)} features"
        + (f", classes {html.escape(', '.join(class_labels))}" if class_labels else "")
        + f"; {len(history.epochs)} epochs of {history.steps_per_epoch} steps; BN fingerprint "
        f"<code>{fingerprint}</code></p>",
        "<h2>Final metrics (eval mode)</h2>",
        _table(["metric", "value"], sorted(metrics.items())),
        "<h2>Curves</h2>",
        f'<img src="{CURVES_PNG}" alt="loss and {html.escape(history.metric)} per epoch">',
        _table(epoch_header, epoch_rows),
    ]
    if BN_PNG in files:
        sections += [
            "<h2>BN statistics, as frozen for serving</h2>",
            f'<img src="{BN_PNG}" alt="running mean and std, gamma and beta per channel">',
            _table(bn_header, bn_rows),
            "<h2>Running statistics during training</h2>",
            f'<img src="{TRAJECTORY_PNG}" alt="running statistics per epoch">',
        ]
    sections += [
        "<h2>Input standardization</h2>",
        f'<img src="{INPUT_PNG}" alt="mean and std per input feature">',
        _table(["feature", "mean", "std"], input_rows),
        "<h2>Training configuration</h2>",
        _table(["option", "value"], sorted((k, str(v)) for k, v in training.items())),
    ]
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_STYLE}</style></head><body>{''.join(sections)}</body></html>\n"
    )
    return {REPORT_FILE: page.encode(), **files}
