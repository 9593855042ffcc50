"""The lean runtime computes what the torch network computes, without ever importing torch.

These tests import torch to compare; the lean path itself is checked for torch in a fresh interpreter.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from models import fold_batchnorm, load_artifact, load_lean_artifact, numpy_net
from models.bn import batchnorm_layers
from models.errors import UnsupportedLayerError
from models.layers import (
    ActivationSpec,
    BatchNormSpec,
    Conv2dSpec,
    FlattenSpec,
    LayerSpec,
    LinearSpec,
    MaxPool2dSpec,
    ReshapeSpec,
    StandardizeSpec,
)
from models.lean import fold
from models.modules import build_network as build_torch_network
from models.numpy_net import build_network, softmax
from models.reader import expected_tensors
from tests.models.tiny_nets import KINDS, Trained

ROOT = Path(__file__).resolve().parents[2]


def random_rows(artifact_dir: Path, n: int, seed: int = 0) -> np.ndarray:
    """Gives back ``n`` raw float32 rows spread over ±3 training standard deviations of each feature."""
    std = load_lean_artifact(artifact_dir).manifest.input_standardization
    z = np.random.default_rng(seed).uniform(-3, 3, size=(n, len(std.mean)))
    return (np.asarray(std.mean) + z * np.asarray(std.std)).astype(np.float32)


def assert_same_answers(got: np.ndarray, want: np.ndarray) -> None:
    """Within 1e-5, and for values past 1 (a regression in target units) within 1e-5 of their size: float32
    itself spaces numbers near 64 by 7.6e-6, so two float32 computations can differ by that much there."""
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def torch_answers(artifact_dir: Path, rows: np.ndarray, *, folded: bool) -> np.ndarray:
    artifact = load_artifact(artifact_dir)
    net = fold_batchnorm(artifact.model) if folded else artifact.model
    with torch.inference_mode():
        out = net(torch.from_numpy(rows))
        if artifact.manifest.task == "classification":
            out = torch.softmax(out, dim=1)
    return out.numpy()


def lean_answers(artifact_dir: Path, rows: np.ndarray, *, folded: bool) -> np.ndarray:
    artifact = load_lean_artifact(artifact_dir)
    net = fold(artifact)[0] if folded else artifact.network
    out = net(rows)
    return softmax(out) if artifact.manifest.task == "classification" else out


@pytest.mark.parametrize("folded", [False, True], ids=["unfolded", "folded"])
@pytest.mark.parametrize("kind", KINDS)
def test_lean_answers_equal_the_torch_networks_on_10000_random_rows(
    exported: dict[str, Path], kind: str, folded: bool
) -> None:
    rows = random_rows(exported[kind], 10_000)
    got = lean_answers(exported[kind], rows, folded=folded)
    assert got.dtype == np.float32 and got.shape[0] == 10_000
    assert_same_answers(got, torch_answers(exported[kind], rows, folded=folded))


@pytest.mark.parametrize("kind", KINDS)
def test_lean_network_reproduces_the_canary_outputs_recorded_at_export(
    exported: dict[str, Path], kind: str
) -> None:
    artifact = load_lean_artifact(exported[kind])
    canary = artifact.manifest.canary
    for net in (artifact.network, fold(artifact)[0]):
        got = net(np.asarray(canary.inputs, dtype=np.float32))
        np.testing.assert_allclose(got, canary.outputs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_lean_loader_reports_what_load_artifact_reports(exported: dict[str, Path], kind: str) -> None:
    lean, full = load_lean_artifact(exported[kind]), load_artifact(exported[kind])
    assert lean.manifest == full.manifest
    assert lean.weights_sha256 == full.weights_sha256
    assert lean.bn_fingerprint == full.bn_fingerprint
    assert lean.batchnorm == full.batchnorm
    state = full.model.state_dict()
    assert set(lean.tensors) == set(state)
    for key, array in lean.tensors.items():
        np.testing.assert_array_equal(array, state[key].numpy(), err_msg=key)


def test_fold_replaces_bn_after_a_weight_layer_and_keeps_bn_after_an_activation(
    exported: dict[str, Path],
) -> None:
    before, diff = fold(load_lean_artifact(exported["mlp_bn_before"]))
    assert [s.name for s in before.steps if s.bn and s.op is None] == ["bn1", "bn2"]  # folded: a no-op slot
    assert 0 <= diff <= 1e-5
    after, _ = fold(load_lean_artifact(exported["mlp_bn_after"]))
    assert [s.name for s in after.steps if s.bn and s.op is not None] == [
        "bn1",
        "bn2",
    ]  # nothing to fold into


@pytest.mark.parametrize("folded", [False, True], ids=["unfolded", "folded"])
@pytest.mark.parametrize("kind", ["mlp_bn_before", "mlp_bn_after", "cnn"])
def test_lean_forward_shows_every_bn_layers_output_as_torch_computes_it(
    exported: dict[str, Path], kind: str, folded: bool
) -> None:
    rows = random_rows(exported[kind], 64, seed=1)
    model = load_artifact(exported[kind]).model
    torch_outputs: dict[str, np.ndarray] = {}
    hooks = [
        bn.register_forward_hook(lambda m, i, out, name=name: torch_outputs.update({name: out.numpy()}))
        for name, bn in batchnorm_layers(model)
    ]
    with torch.inference_mode():
        model(torch.from_numpy(rows))
    for h in hooks:
        h.remove()
    artifact = load_lean_artifact(exported[kind])
    net = fold(artifact)[0] if folded else artifact.network
    seen: dict[str, np.ndarray] = {}
    out = net.forward(rows, see=lambda name, y: seen.update({name: y.copy()}))
    assert list(seen) == list(torch_outputs) == net.bn_names
    for name, y in seen.items():
        assert y.shape == torch_outputs[name].shape  # (B, C) or (B, C, H, W), as torch lays it out
        np.testing.assert_allclose(y, torch_outputs[name], atol=2e-5, rtol=1e-5, err_msg=name)
    np.testing.assert_array_equal(out, net(rows))  # observing changes nothing


def test_observed_bn_outputs_are_not_overwritten_by_later_layers(exported: dict[str, Path]) -> None:
    net = load_lean_artifact(exported["mlp_bn_before"]).network  # BN, then its activation
    rows = random_rows(exported["mlp_bn_before"], 32, seed=2)
    kept: dict[str, np.ndarray] = {}
    copies: dict[str, np.ndarray] = {}
    net.forward(rows, see=lambda name, y: (kept.update({name: y}), copies.update({name: y.copy()})))
    for name in kept:
        np.testing.assert_array_equal(kept[name], copies[name], err_msg=name)
    assert (copies["bn1"] < 0).any()  # a ReLU working in place would have zeroed these


def test_importing_and_serving_from_the_lean_path_never_imports_torch(exported: dict[str, Path]) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import models
        from models import load_lean_artifact
        from models.lean import fold
        from models.numpy_net import softmax
        artifact = load_lean_artifact({str(exported["cnn"])!r})
        net, diff = fold(artifact)
        softmax(net(np.zeros((3, 64), dtype=np.float32)))
        print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.parametrize("kind", KINDS)
def test_the_tensors_the_specs_declare_are_the_torch_modules_state_dict(
    trained_nets: dict[str, Trained], kind: str
) -> None:
    layers = trained_nets[kind].layers
    state = build_torch_network(layers).state_dict()
    declared = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()}
    assert expected_tensors(layers) == declared


# Layers the two builders (bnserve's MLP and CNN) do not make, but the format allows: a strided and unpadded
# convolution with a bias, BN without affine parameters, a pool over an odd size, every activation.
ODD_LAYERS: list[LayerSpec] = [
    StandardizeSpec(name="input_norm", num_features=2 * 7 * 7),
    ReshapeSpec(name="reshape", shape=(2, 7, 7)),
    Conv2dSpec(name="conv1", in_channels=2, out_channels=3, kernel_size=3, stride=2, padding=0, bias=True),
    BatchNormSpec(name="bn1", type="BatchNorm2d", num_features=3, eps=1e-3, momentum=0.1, affine=False),
    ActivationSpec(name="act1", type="SiLU"),
    Conv2dSpec(name="conv2", in_channels=3, out_channels=4, kernel_size=2, stride=1, padding=1, bias=True),
    BatchNormSpec(name="bn2", type="BatchNorm2d", num_features=4, eps=1e-5, momentum=0.1),
    ActivationSpec(name="act2", type="Tanh"),
    MaxPool2dSpec(name="pool", kernel_size=2),
    FlattenSpec(name="flatten"),
    LinearSpec(name="fc", in_features=4 * 2 * 2, out_features=6, bias=True),
    BatchNormSpec(name="bn3", type="BatchNorm1d", num_features=6, eps=1e-5, momentum=0.1),
    ActivationSpec(name="act3", type="GELU"),
    LinearSpec(name="head", in_features=6, out_features=2),
]


@pytest.mark.parametrize("folded", [False, True], ids=["unfolded", "folded"])
def test_lean_network_equals_torch_on_layers_bnserve_does_not_build(folded: bool) -> None:
    torch.manual_seed(0)
    net = build_torch_network(ODD_LAYERS).eval()
    with torch.no_grad():  # statistics and BN parameters away from their defaults; weights as initialized
        for name, tensor in net.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(torch.rand_like(tensor) + 0.5)
            elif name.endswith(("running_mean", "bias")):
                tensor.copy_(torch.randn_like(tensor) * 0.5)
            elif name.startswith("bn") and name.endswith("weight"):
                tensor.copy_(1 + torch.randn_like(tensor) * 0.3)
    tensors = {k: v.numpy() for k, v in net.state_dict().items()}
    lean = build_network(ODD_LAYERS, tensors, fold=folded)
    rows = torch.randn(500, 98) * 3
    with torch.inference_mode():
        want = net(rows).numpy()
    assert_same_answers(lean(rows.numpy()), want)


def test_activations_equal_torchs_far_into_their_tails() -> None:
    x = np.concatenate([np.linspace(-30, 30, 200_001), [-1e4, -100.0, 0.0, 100.0, 1e4]]).astype(np.float32)
    specs = [
        StandardizeSpec(name="input_norm", num_features=1),
        ActivationSpec(name="act", type="GELU"),
    ]
    tensors = {"input_norm.mean": np.zeros(1, np.float32), "input_norm.std": np.ones(1, np.float32)}
    for kind, fn in (
        ("GELU", torch.nn.functional.gelu),
        ("SiLU", torch.nn.functional.silu),
        ("Tanh", torch.tanh),
        ("ReLU", torch.relu),
    ):
        specs[1] = ActivationSpec(name="act", type=kind)  # type: ignore[arg-type]
        got = build_network(specs, tensors)(x[:, None])[:, 0]
        want = fn(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-6, err_msg=kind)


def test_a_layer_the_lean_runtime_cannot_compute_is_refused_by_name() -> None:
    specs: list[LayerSpec] = [
        StandardizeSpec(name="input_norm", num_features=4),
        ReshapeSpec(name="reshape", shape=(1, 2, 2)),
        BatchNormSpec(name="bn1", type="BatchNorm1d", num_features=1, eps=1e-5, momentum=0.1),
    ]
    tensors = expected_tensors(specs)
    arrays = {k: np.ones(shape, dtype=dtype) for k, (shape, dtype) in tensors.items()}
    with pytest.raises(UnsupportedLayerError, match=r"layer 'bn1' \(BatchNorm1d\) gets images"):
        build_network(specs, arrays)


def test_a_table_artifact_loads_lean_its_raw_canary_rows_encoded_as_torch_encodes_them(
    table_artifact: Path,
) -> None:
    lean, full = load_lean_artifact(table_artifact), load_artifact(table_artifact)
    m = lean.manifest
    assert m.preprocessing is not None and lean.encoder is not None and full.encoder is not None
    assert any(isinstance(v, str) or v is None for r in m.canary.inputs for v in r)  # raw rows, as stored
    x = lean.encoder.encode_rows(m.canary.inputs, m.feature_names)
    assert x.shape[1] == m.input_width != len(m.feature_names)
    with torch.inference_mode():
        expected = full.model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(lean.network(x), expected, atol=1e-5, rtol=1e-5)
    folded, diff = fold(lean)
    assert diff < 1e-4
    np.testing.assert_allclose(folded(x), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("classes", [1, 2, 3, 16, 17, 100])
@pytest.mark.parametrize("rows", [1, 8, 9, 1024])
def test_softmax_matches_torch_for_any_class_count(classes: int, rows: int) -> None:
    # Both of its paths (column by column for a few classes and many rows, row by row otherwise), with
    # logits large enough that an unshifted exp would overflow float32.
    z = np.random.default_rng(classes * rows).normal(scale=30.0, size=(rows, classes)).astype(np.float32)
    z[0, 0] = 1000.0
    got = softmax(z)
    want = torch.softmax(torch.from_numpy(z), dim=1).numpy()
    assert got.dtype == np.float32 and got.shape == z.shape
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("inplace", [False, True])
def test_relu_against_the_zero_block_equals_numpys_maximum_with_zero(inplace: bool) -> None:
    relu = numpy_net._relu_inplace if inplace else numpy_net._relu
    rng = np.random.default_rng(0)
    special = np.array([np.nan, -np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45, -1e-45, -3.0, 2.5], np.float32)
    cases = {
        "activation": rng.standard_normal((1024, 256)).astype(np.float32),
        "special values": np.tile(special, (3, 1)),
        "images, strided": rng.standard_normal((4, 8, 8, 6)).astype(np.float32)[:, ::2],
        "empty": np.zeros((0, 7), np.float32),
        "float64": rng.standard_normal((5, 3)),
    }
    for name, x in cases.items():
        expected = np.maximum(x, 0)
        got = relu(x.copy() if inplace else x)
        assert got.dtype == x.dtype and got.shape == x.shape, name
        np.testing.assert_array_equal(got, expected, err_msg=name)  # NaN where NaN
        assert (np.signbit(got) == np.signbit(expected)).all(), name
    # Past the zero block, numpy's scalar path: the same answers.
    big = np.full(numpy_net._ZEROS.size + 3, -1.0, np.float32)
    big[-1] = 4.0
    np.testing.assert_array_equal(relu(big), np.maximum(big, 0))


def test_the_zero_block_is_zeros_and_read_only() -> None:
    zeros = numpy_net._ZEROS
    assert zeros.size * 4 == numpy_net.ZERO_BLOCK_BYTES
    assert not zeros.flags.writeable
    assert not zeros[:: 4096 // 4].any() and not zeros[-1024:].any()
    x = np.ones((2, 3), np.float32)
    assert numpy_net._relu_inplace(x) is x  # in place: the input, not a new array
    with pytest.raises(ValueError):
        np.maximum(x, 0, out=numpy_net._zeros_for(x))  # type: ignore[call-overload]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc")
def test_reading_the_whole_zero_block_holds_no_resident_memory() -> None:
    # In a fresh interpreter: every page of the 64 MB block read, as ReLU reads it on the largest activations.
    code = textwrap.dedent(
        """
        from models import numpy_net
        def rss_kb():
            return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS"))
        before = rss_kb()
        assert not numpy_net._ZEROS.any()
        print(rss_kb() - before)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(done.stdout) < 8 * 1024, f"reading the zero block took {done.stdout.strip()} kB resident"
