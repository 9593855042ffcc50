"""The preprocessing in the artifact: raw rows encode as docs/ARTIFACT.md says, the canary check covers it, and
the doc's numpy reference gives PyTorch's outputs for raw rows."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest
import torch

from models import MLPConfig, build_network, freeze, load_artifact, mlp_layers, save_artifact
from models.errors import CanaryMismatchError, InputError, ManifestError
from models.preprocessing import (
    BooleanFeature,
    CategoricalFeature,
    Encoder,
    NumericFeature,
    Preprocessing,
    encoded_names,
)
from tests.models.tiny_nets import train_a_few_steps

NAMES = ["age", "plan", "member", "zone"]
PRE = Preprocessing(
    missing_tokens=["", "NA", "?"],
    features=[
        NumericFeature(fill=40.0, missing_rate=0.1),
        CategoricalFeature(
            categories=["basic", "pro"], frequencies=[0.5, 0.3], other_rate=0.1, missing_rate=0.1
        ),
        BooleanFeature(fill=1.0, true_rate=0.6, missing_rate=0.0),
        CategoricalFeature(
            categories=["north", "south"], frequencies=[0.6, 0.4], other_rate=0.0, missing_rate=0.0
        ),
    ],
)
ARTIFACT_MD = Path(__file__).parents[2] / "docs" / "ARTIFACT.md"
RAW_ROWS: list[list[Any]] = [
    [31.0, "pro", True, "north"],
    [None, None, None, None],
    [52.5, "enterprise", "no", "west"],  # unseen categories
    ["NA", " basic ", "YES", "?"],
]


def test_each_kind_encodes_into_the_documented_columns() -> None:
    assert encoded_names(NAMES, PRE) == [
        "age", "age:missing", "plan=basic", "plan=pro", "plan=<other>", "plan=<missing>", "member",
        "zone=north", "zone=south",
    ]  # fmt: skip
    x = Encoder(PRE).encode_rows(RAW_ROWS, NAMES)
    assert x.dtype == np.float32 and x.shape == (4, 9)
    np.testing.assert_array_equal(
        x,
        [
            [31, 0, 0, 1, 0, 0, 1, 1, 0],
            [40, 1, 0, 0, 0, 1, 1, 0, 0],  # fill + indicator; <missing>; boolean median; zone: no column
            [52.5, 0, 0, 0, 1, 0, 0, 0, 0],  # unseen plan -> <other>; unseen zone -> no column
            [40, 1, 1, 0, 0, 0, 1, 0, 0],  # a token is missing; spaces stripped; YES is true
        ],
    )


def test_a_missing_category_without_its_column_is_treated_as_unseen() -> None:
    pre = Preprocessing(
        missing_tokens=[],
        features=[CategoricalFeature(categories=["a"], frequencies=[0.9], other_rate=0.1, missing_rate=0.0)],
    )
    np.testing.assert_array_equal(
        Encoder(pre).encode_rows([[None], ["zz"], ["a"]], ["c"]), [[0, 1], [0, 1], [1, 0]]
    )


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ([31.0, 7, True, "north"], r"categorical feature 'plan' at row 1, got the number 7"),
        (["old", "pro", True, "north"], r"numeric feature 'age' at row 1, got the string 'old'"),
        ([31.0, "pro", "maybe", "north"], r"boolean feature 'member' at row 1, got the string 'maybe'"),
        ([float("inf"), "pro", True, "north"], r"finite number for feature 'age' at row 1"),
        ([31.0, ["pro"], True, "north"], r"categorical feature 'plan' at row 1, got a JSON array"),
    ],
)
def test_a_value_of_the_wrong_kind_names_the_row_and_the_feature(row: list[Any], message: str) -> None:
    with pytest.raises(InputError, match=message) as e:
        Encoder(PRE).encode_rows([RAW_ROWS[0], row], NAMES)
    assert e.value.row == 1


@pytest.fixture(scope="module")
def table_artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Sequential]:
    torch.manual_seed(0)
    layers = mlp_layers(MLPConfig(num_features=PRE.width, num_outputs=2, hidden=(8,)))
    net = build_network(layers)
    rows = torch.from_numpy(Encoder(PRE).encode_rows(RAW_ROWS * 8, NAMES))
    rows = rows + 0.01 * torch.randn_like(rows)  # a spread for the standardization
    train_a_few_steps(net, rows, torch.randint(0, 2, (len(rows),)), "classification")
    freeze(net)
    out = save_artifact(
        tmp_path_factory.mktemp("pre") / "table",
        net,
        layers,
        name="table",
        task="classification",
        feature_names=NAMES,
        class_labels=["no", "yes"],
        canary_inputs=RAW_ROWS,
        preprocessing=PRE,
    )
    return out, net


def test_an_artifact_keeps_its_raw_canary_rows_and_its_preprocessing(
    table_artifact: tuple[Path, Any],
) -> None:
    artifact = load_artifact(table_artifact[0])
    assert artifact.manifest.canary.inputs == RAW_ROWS
    assert artifact.manifest.preprocessing == PRE and artifact.encoder is not None
    assert artifact.manifest.input_shape == [4] and artifact.manifest.input_width == 9


def rewrite_manifest(artifact_dir: Path, edit: Any) -> None:
    path = artifact_dir / "manifest.json"
    m = orjson.loads(path.read_bytes())
    edit(m)
    data = orjson.dumps(m, option=orjson.OPT_INDENT_2) + b"\n"
    path.write_bytes(data)
    (artifact_dir / "manifest.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  manifest.json\n")


def test_the_canary_check_covers_the_preprocessing(table_artifact: tuple[Path, Any], tmp_path: Path) -> None:
    copy = Path(shutil.copytree(table_artifact[0], tmp_path / "a"))
    rewrite_manifest(copy, lambda m: m["preprocessing"]["features"][0].update(fill=41.0))  # another median
    with pytest.raises(CanaryMismatchError):
        load_artifact(copy)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["preprocessing"]["features"].pop(), r"preprocessing.features must describe the 4 feature_names"),
        (lambda m: m["preprocessing"]["features"][1]["categories"].append("NA"), r"categories must be distinct, with one frequency each"),
        (lambda m: m["preprocessing"]["features"][1].update(categories=["basic", "?"]), r"categories \['\?'\] are missing tokens"),
        (lambda m: m["preprocessing"]["features"][0].update(missing_rate=0.0), r"preprocessing makes 8 input columns"),
        (lambda m: m.update(preprocessing=None), r"canary inputs must be numbers|feature count disagrees"),
    ],
)  # fmt: skip
def test_a_preprocessing_that_contradicts_the_manifest_is_refused(
    table_artifact: tuple[Path, Any], tmp_path: Path, edit: Any, message: str
) -> None:
    copy = Path(shutil.copytree(table_artifact[0], tmp_path / "a"))
    rewrite_manifest(copy, edit)
    with pytest.raises(ManifestError, match=message):
        load_artifact(copy)


def test_the_doc_reference_encodes_raw_rows_as_torch_serves_them(table_artifact: tuple[Path, Any]) -> None:
    (code,) = re.findall(r"^```python\n(.*?)^```$", ARTIFACT_MD.read_text(), flags=re.DOTALL | re.MULTILINE)
    namespace: dict[str, object] = {"__name__": "artifact_reference"}
    exec(compile(code, str(ARTIFACT_MD), "exec"), namespace)
    ref = SimpleNamespace(**namespace)
    manifest, tensors = ref.load(table_artifact[0])
    ref.check_canary(manifest, tensors)
    artifact = load_artifact(table_artifact[0])
    assert artifact.encoder is not None
    with torch.inference_mode():
        expected = artifact.model(torch.from_numpy(artifact.encoder.encode_rows(RAW_ROWS, NAMES))).double()
    got = torch.from_numpy(ref.forward(manifest, tensors, RAW_ROWS))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_a_few_rows_and_many_rows_encode_alike() -> None:
    rng = np.random.default_rng(0)
    choices: list[list[Any]] = [
        [1.5, None, "NA", 99.0],
        ["basic", "pro", None, "x", "?"],
        [True, False, None],
        ["north", "south", "east", None],
    ]
    rows = [[c[rng.integers(len(c))] for c in choices] for _ in range(50)]
    encoder = Encoder(PRE)
    many = encoder.encode_rows(rows, NAMES)  # numpy, beyond SMALL_BATCH rows
    one_by_one = np.concatenate([encoder.encode_rows([r], NAMES) for r in rows])
    np.testing.assert_array_equal(many, one_by_one)


def test_a_format_2_manifest_written_before_preprocessing_existed_still_loads(artifact_dir: Path) -> None:
    rewrite_manifest(artifact_dir, lambda m: m.pop("preprocessing"))  # numeric rows, no such key
    artifact = load_artifact(artifact_dir)
    assert artifact.manifest.preprocessing is None and artifact.encoder is None
    assert artifact.manifest.input_width == len(artifact.manifest.feature_names)


def test_an_artifact_with_preprocessing_has_no_onnx_export(table_artifact: tuple[Path, Any]) -> None:
    from models.errors import ExportError
    from models.export.onnx_graph import export_onnx

    with pytest.raises(ExportError, match=r"preprocessing .* which the ONNX graph does not carry"):
        export_onnx(load_artifact(table_artifact[0]))
