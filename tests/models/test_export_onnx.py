"""``python -m models.export onnx``: the ONNX graph, its verification with onnxruntime, the Triton repository.

Each tiny network (MLP with BN before and after the activation, regressor, CNN) is exported once per module;
the graph is then run with onnxruntime against the artifact's own unfolded torch network.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from google.protobuf import text_format
from onnx import helper

from models import ExportError, load_artifact
from models.artifact import Artifact
from models.export import export_onnx, triton_config, verify_onnx, write_triton_repository
from models.export.__main__ import main
from models.signature import signature

KINDS = ("mlp_bn_before", "mlp_bn_after", "mlp_regression", "cnn")


@pytest.fixture(scope="module")
def artifacts(exported: dict[str, Path]) -> dict[str, Artifact]:
    return {kind: load_artifact(exported[kind]) for kind in KINDS}


@pytest.fixture(scope="module")
def onnx_models(artifacts: dict[str, Artifact]) -> dict[str, bytes]:
    return {kind: export_onnx(artifact).model for kind, artifact in artifacts.items()}


def run(model: bytes, rows: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"input": rows}), strict=True))


def rows_like_training(artifact: Artifact, count: int, seed: int = 0) -> np.ndarray:
    std = artifact.manifest.input_standardization
    z = np.random.default_rng(seed).uniform(-3, 3, size=(count, len(std.mean)))
    return (np.array(std.mean) + z * np.array(std.std)).astype(np.float32)


def torch_outputs(artifact: Artifact, rows: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return artifact.model(torch.from_numpy(rows)).numpy()


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_graph_gives_the_unfolded_networks_outputs_under_the_oip_names(
    kind: str, artifacts: dict[str, Artifact], onnx_models: dict[str, bytes]
) -> None:
    artifact = artifacts[kind]
    rows = rows_like_training(artifact, 50)
    got = run(onnx_models[kind], rows)
    expected = torch_outputs(artifact, rows)
    assert list(got) == signature(artifact.manifest).output_names
    if artifact.manifest.task == "regression":
        np.testing.assert_allclose(got["value"], expected, atol=1e-5, rtol=1e-5)
        return
    np.testing.assert_allclose(got["logits"], expected, atol=1e-5, rtol=1e-5)
    probabilities = torch.softmax(torch.from_numpy(expected), dim=1).numpy()
    np.testing.assert_allclose(got["probabilities"], probabilities, atol=1e-6)
    labels = artifact.manifest.class_labels or []
    assert [v.decode() if isinstance(v, bytes) else v for v in got["label"]] == [
        labels[i] for i in probabilities.argmax(axis=1)
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_graph_has_a_dynamic_batch_and_takes_raw_rows_of_the_manifest_width(
    kind: str, artifacts: dict[str, Artifact], onnx_models: dict[str, bytes]
) -> None:
    graph = onnx.load_from_string(onnx_models[kind]).graph
    (graph_input,) = graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert graph_input.name == "input"
    assert dims[0].dim_param and not dims[0].HasField("dim_value")
    assert dims[1].dim_value == len(artifacts[kind].manifest.feature_names)
    for batch in (1, 3, 300):
        rows = rows_like_training(artifacts[kind], batch, seed=batch)
        assert all(len(v) == batch for v in run(onnx_models[kind], rows).values())


@pytest.mark.parametrize("kind", KINDS)
def test_a_rows_onnx_outputs_do_not_depend_on_the_other_rows_of_its_batch(
    kind: str, artifacts: dict[str, Artifact], onnx_models: dict[str, bytes]
) -> None:
    row = rows_like_training(artifacts[kind], 1, seed=7)
    alone = run(onnx_models[kind], row)
    for seed in (1, 2):
        batch = np.concatenate([rows_like_training(artifacts[kind], 20, seed=seed), row])
        among = run(onnx_models[kind], batch)
        for name, value in alone.items():
            if value.dtype.kind == "f":
                np.testing.assert_allclose(among[name][-1:], value, atol=1e-6, rtol=0)
            else:
                assert list(among[name][-1:]) == list(value)


def test_bn_after_a_linear_is_folded_and_bn_after_an_activation_stays_inference_mode(
    onnx_models: dict[str, bytes], artifacts: dict[str, Artifact]
) -> None:
    def ops(model: bytes) -> list[onnx.NodeProto]:
        return list(onnx.load_from_string(model).graph.node)

    for kind in ("mlp_bn_before", "cnn", "mlp_regression"):
        assert "BatchNormalization" not in [n.op_type for n in ops(onnx_models[kind])], kind
    kept = [n for n in ops(onnx_models["mlp_bn_after"]) if n.op_type == "BatchNormalization"]
    assert len(kept) == 2
    for node in kept:
        training_mode = [a.i for a in node.attribute if a.name == "training_mode"]
        assert training_mode in ([], [0]), "a BatchNormalization in training mode would use batch statistics"
    unfolded = export_onnx(artifacts["mlp_bn_before"], fold=False)
    assert (unfolded.folded_bn, unfolded.unfolded_bn) == (0, 2)
    assert [n.op_type for n in ops(unfolded.model)].count("BatchNormalization") == 2


def test_onnx_model_records_which_artifact_it_came_from(
    onnx_models: dict[str, bytes], artifacts: dict[str, Artifact]
) -> None:
    model = onnx.load_from_string(onnx_models["cnn"])
    props = {p.key: p.value for p in model.metadata_props}
    assert props["bnserve.artifact_sha256"] == artifacts["cnn"].weights_sha256
    assert props["bnserve.bn_fingerprint"] == artifacts["cnn"].bn_fingerprint
    assert model.producer_name == "bnserve"


def _with_batch_mean_subtracted(model: bytes) -> bytes:
    """Gives back ``model`` with every row centred on its batch's mean first: the outputs then mix rows."""
    proto = onnx.load_from_string(model)
    for node in proto.graph.node:
        node.input[:] = ["mixed" if name == "input" else name for name in node.input]
    axes = helper.make_tensor("batch_axis", onnx.TensorProto.INT64, [1], [0])
    proto.graph.initializer.append(axes)
    mix = [
        helper.make_node("ReduceMean", ["input", "batch_axis"], ["batch_mean"], keepdims=1),
        helper.make_node("Sub", ["input", "batch_mean"], ["mixed"]),
    ]
    nodes = mix + list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return proto.SerializeToString()


def test_verification_refuses_a_graph_whose_rows_depend_on_their_batch(
    onnx_models: dict[str, bytes], artifacts: dict[str, Artifact]
) -> None:
    with pytest.raises(ExportError, match="changed when the other rows of their batch changed"):
        verify_onnx(_with_batch_mean_subtracted(onnx_models["mlp_bn_before"]), artifacts["mlp_bn_before"])


def test_verification_refuses_a_graph_whose_weights_differ_from_the_artifacts(
    onnx_models: dict[str, bytes], artifacts: dict[str, Artifact]
) -> None:
    proto = onnx.load_from_string(onnx_models["mlp_regression"])
    weight = max(proto.graph.initializer, key=lambda t: len(t.raw_data) or len(t.float_data))
    values = onnx.numpy_helper.to_array(weight) * 1.01
    weight.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), weight.name))
    with pytest.raises(ExportError, match=r"canary outputs .* differing by up to"):
        verify_onnx(proto.SerializeToString(), artifacts["mlp_regression"])


def _triton_model_config() -> Any:
    """Gives back Triton's ``ModelConfig`` message class, from the protobuf module tritonclient ships.

    Loaded by path: importing ``tritonclient.grpc`` would need grpcio, which the http client does not.
    """
    spec = importlib.util.find_spec("tritonclient")
    assert spec is not None and spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    module_spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.ModelConfig


@pytest.mark.parametrize("kind", ("mlp_bn_before", "mlp_regression"))
def test_triton_config_is_a_valid_model_config_declaring_the_graphs_tensors(
    kind: str, artifacts: dict[str, Artifact]
) -> None:
    config = text_format.Parse(triton_config(artifacts[kind], max_batch_size=256), _triton_model_config()())
    m = artifacts[kind].manifest
    assert (config.name, config.backend, config.max_batch_size) == (m.name, "onnxruntime", 256)
    assert config.HasField("dynamic_batching")
    (model_input,) = config.input
    assert (model_input.name, list(model_input.dims)) == ("input", [len(m.feature_names)])
    types = {o.name: (_type_name(o.data_type), list(o.dims)) for o in config.output}
    if m.task == "regression":
        assert types == {"value": ("TYPE_FP32", [1])}
    else:
        k = len(m.class_labels or [])
        assert types == {
            "probabilities": ("TYPE_FP32", [k]),
            "label": ("TYPE_STRING", [1]),
            "logits": ("TYPE_FP32", [k]),
        }
        label = next(o for o in config.output if o.name == "label")
        assert label.HasField("reshape") and list(label.reshape.shape) == []


def _type_name(value: int) -> str:
    return str(
        _triton_model_config()
        .DESCRIPTOR.fields_by_name["output"]
        .message_type.fields_by_name["data_type"]
        .enum_type.values_by_number[value]
        .name
    )


def test_triton_repository_holds_the_verified_graph_as_version_1(
    tmp_path: Path, artifacts: dict[str, Artifact], onnx_models: dict[str, bytes]
) -> None:
    (tmp_path / "other_model").mkdir()
    model_dir = write_triton_repository(tmp_path, artifacts["cnn"], onnx_models["cnn"])
    assert model_dir == tmp_path / "cnn"
    assert sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*")) == [
        "1",
        "1/model.onnx",
        "config.pbtxt",
    ]
    assert (model_dir / "1" / "model.onnx").read_bytes() == onnx_models["cnn"]
    assert (tmp_path / "other_model").is_dir(), "other models in the repository are left alone"


def test_export_command_writes_the_onnx_file_and_the_triton_repository(
    exported: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "model.onnx"
    assert main(["onnx", str(exported["mlp_regression"]), str(out), "--triton", str(tmp_path / "repo")]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "canary outputs within" in printed
    assert (tmp_path / "repo" / "mlp_regression" / "1" / "model.onnx").read_bytes() == out.read_bytes()
    rows = rows_like_training(load_artifact(exported["mlp_regression"]), 5)
    expected = torch_outputs(load_artifact(exported["mlp_regression"]), rows)
    np.testing.assert_allclose(run(out.read_bytes(), rows)["value"], expected, atol=1e-5, rtol=1e-5)


def test_export_command_refuses_a_tampered_artifact_and_writes_nothing(
    exported: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    artifact = Path(shutil.copytree(exported["mlp_bn_before"], tmp_path / "tampered"))
    weights = artifact / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    out = tmp_path / "model.onnx"
    with pytest.raises(SystemExit) as exit_info:
        main(["onnx", str(artifact), str(out), "--triton", str(tmp_path / "repo")])
    assert exit_info.value.code == 1
    assert "SHA-256" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "repo").exists()
