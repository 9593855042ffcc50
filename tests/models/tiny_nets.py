"""Tiny networks trained for a few steps on random data, and how the tests export them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from models import CNNConfig, MLPConfig, build_network, cnn_layers, freeze, mlp_layers, save_artifact
from models.layers import LayerSpec
from models.manifest import Task

KINDS = ("mlp_bn_before", "mlp_bn_after", "mlp_regression", "cnn")


@dataclass
class Trained:
    """A frozen network, the layer specs it was built from, and raw rows shaped like its inputs."""

    kind: str
    net: nn.Sequential
    layers: list[LayerSpec]
    rows: torch.Tensor  # (B, num_features), raw: not yet standardized
    task: Task
    class_labels: list[str] | None
    input_shape: list[int] | None = None

    @property
    def feature_names(self) -> list[str]:
        return [f"x{i}" for i in range(self.rows.shape[1])]


def train_a_few_steps(net: nn.Sequential, rows: torch.Tensor, targets: torch.Tensor, task: Task) -> None:
    """Moves the weights and the BN running statistics away from their initial values."""
    net.input_norm.mean.copy_(rows.mean(0))
    net.input_norm.std.copy_(rows.std(0))
    loss_fn = nn.CrossEntropyLoss() if task == "classification" else nn.MSELoss()
    net.train()
    # Plain SGD by hand: torch.optim imports torch._dynamo, which takes seconds.
    for batch in torch.arange(len(rows)).split(16):
        net.zero_grad()
        loss_fn(net(rows[batch]), targets[batch]).backward()
        with torch.no_grad():
            for p in net.parameters():
                p -= 0.1 * p.grad


def make_trained(kind: str) -> Trained:
    torch.manual_seed(KINDS.index(kind))
    if kind == "cnn":
        layers = cnn_layers(CNNConfig(num_classes=3, channels=(4, 8)))
        rows = torch.rand(64, 64) * 16  # 8x8 images with pixel values in [0, 16], like sklearn's digits
        targets = torch.randint(0, 3, (64,))
        trained = Trained(
            kind, build_network(layers), layers, rows, "classification", ["a", "b", "c"], [1, 8, 8]
        )
    elif kind == "mlp_regression":
        layers = mlp_layers(MLPConfig(num_features=5, num_outputs=1, hidden=(16, 8), rescale_output=True))
        rows = torch.randn(64, 5) * 3 + 2
        y = rows @ torch.randn(5, 1) * 4 + 50
        net = build_network(layers)
        net.output_scale.scale.copy_(y.std(0))
        net.output_scale.shift.copy_(y.mean(0))
        targets = (y - y.mean(0)) / y.std(0)
        trained = Trained(kind, net, layers, rows, "regression", None)
    else:
        position = "before_activation" if kind == "mlp_bn_before" else "after_activation"
        cfg = MLPConfig(
            num_features=5, num_outputs=3, hidden=(16, 8), activation="gelu", bn_position=position
        )
        layers = mlp_layers(cfg)
        rows = torch.randn(64, 5) * 3 + 2
        targets = torch.randint(0, 3, (64,))
        trained = Trained(kind, build_network(layers), layers, rows, "classification", ["low", "mid", "high"])
    # A regression trains on standardized targets; its final Rescale maps them back to target units.
    trainable = trained.net[:-1] if kind == "mlp_regression" else trained.net
    train_a_few_steps(trainable, rows, targets, trained.task)
    freeze(trained.net)
    return trained


def export(trained: Trained, out_dir: Path, *, files: dict[str, bytes] | None = None) -> Path:
    """Gives back the directory of ``trained``'s artifact, with its first 4 rows as canary inputs."""
    return save_artifact(
        out_dir,
        trained.net,
        trained.layers,
        name=trained.kind,
        task=trained.task,
        feature_names=trained.feature_names,
        class_labels=trained.class_labels,
        canary_inputs=trained.rows[:4],
        input_shape=trained.input_shape,
        target_name="y" if trained.task == "regression" else None,
        training={"steps": 4, "optimizer": "sgd", "lr": 0.1},
        metrics={"loss": 1.0},
        files=files,
    )


def downgrade_to_format_1(artifact_dir: Path) -> Path:
    """Rewrites an exported artifact in place as bnserve 0.1.0 wrote it (format 1): the BN settings repeated
    in ``batchnorm``, no format 2 fields. Gives back ``artifact_dir``."""
    import hashlib

    import orjson
    from safetensors.torch import load_file

    path = artifact_dir / "manifest.json"
    m = orjson.loads(path.read_bytes())
    assert not m.pop("files"), "format 1 has no extra files"
    m.pop("bn_statistics")
    assert m.pop("preprocessing") is None, "format 1 has no preprocessing"
    tensors = load_file(artifact_dir / "weights.safetensors")
    m["batchnorm"] = [
        {
            "name": s["name"],
            "kind": "1d" if s["type"] == "BatchNorm1d" else "2d",
            "num_features": s["num_features"],
            "momentum": s["momentum"],
            "eps": s["eps"],
            "affine": s["affine"],
            "num_batches_tracked": int(tensors[f"{s['name']}.num_batches_tracked"]),
            "statistics": "ema",
        }
        for s in m["layers"]
        if s["type"] in ("BatchNorm1d", "BatchNorm2d")
    ]
    m["format_version"] = 1
    data = orjson.dumps(m, option=orjson.OPT_INDENT_2) + b"\n"
    path.write_bytes(data)
    (artifact_dir / "manifest.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  manifest.json\n")
    return artifact_dir
