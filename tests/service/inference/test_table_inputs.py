"""parse_instances and parse_float32_rows with a model's preprocessing: every path gives the Encoder's rows, and
an all-numeric table model keeps the numbers fast paths while taking null for a missing value."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from models.preprocessing import BooleanFeature, CategoricalFeature, Encoder, NumericFeature, Preprocessing
from service.errors import Unprocessable
from service.inference.inputs import TableRows, parse_float32_rows, parse_instances, table_rows_from_columns

NAMES = ["size", "age", "member"]
ENCODER = Encoder(
    Preprocessing(
        missing_tokens=["", "NA"],
        features=[
            NumericFeature(fill=3.0, missing_rate=0.0),  # no indicator
            NumericFeature(fill=40.0, missing_rate=0.2),  # with one
            BooleanFeature(fill=1.0, true_rate=0.6, missing_rate=0.0),
        ],
    )
)


def parsed(rows: list[list[object]]) -> TableRows:
    out = parse_instances(orjson.dumps({"instances": rows}), NAMES, max_rows=10_000, encoder=ENCODER)
    assert isinstance(out, TableRows)
    return out


@pytest.mark.parametrize("count", [1, 300])  # 300 rows: over simdjson's 4 KB threshold
def test_numbers_take_the_fast_paths_and_give_the_encoders_rows(count: int) -> None:
    rows = [[float(i), 30.5, float(i % 2)] for i in range(count)]
    got = parsed(rows)
    np.testing.assert_array_equal(got.x, ENCODER.encode_rows(rows, NAMES))
    assert got.x.shape == (count, 4) and not got.x[:, 2].any()  # the indicator column: nothing missing


def test_null_and_missing_tokens_are_filled_as_training_said() -> None:
    got = parsed([[None, "NA", True], [2.0, None, "no"]])
    np.testing.assert_array_equal(got.x, [[3.0, 40.0, 1.0, 1.0], [2.0, 40.0, 1.0, 0.0]])
    assert np.isnan(got.numbers).sum() == 3


def test_a_float32_body_takes_nan_as_missing_and_refuses_inf_and_non_booleans() -> None:
    body = np.array([[np.nan, 7.0, 1.0]], dtype="<f4").tobytes()
    out = parse_float32_rows(body, NAMES, max_rows=10, encoder=ENCODER)
    assert isinstance(out, TableRows)
    np.testing.assert_array_equal(out.x, [[3.0, 7.0, 0.0, 1.0]])
    with pytest.raises(Unprocessable, match=r"finite number at row 0, column 1 \('age'\)"):
        parse_float32_rows(
            np.array([[1, np.inf, 1]], dtype="<f4").tobytes(), NAMES, max_rows=10, encoder=ENCODER
        )
    with pytest.raises(Unprocessable, match=r"boolean feature 'member' at row 0, got 0.5"):
        parse_float32_rows(
            np.array([[1, 2, 0.5]], dtype="<f4").tobytes(), NAMES, max_rows=10, encoder=ENCODER
        )


def test_per_feature_arrays_give_the_rows_json_gives() -> None:
    columns = {
        "size": np.array([1.0, np.nan], dtype=np.float32),
        "age": np.array([[30.0], [41.0]]),  # [B, 1] as well as [B]
        "member": np.array([True, False]),
    }
    got = table_rows_from_columns(columns, NAMES, ENCODER)
    np.testing.assert_array_equal(got.x, parsed([[1.0, 30.0, True], [None, 41.0, False]]).x)
    with pytest.raises(Unprocessable, match="same number of rows"):
        table_rows_from_columns(columns | {"age": np.array([1.0])}, NAMES, ENCODER)


def test_per_feature_bytes_are_utf8_categories_and_none_is_missing() -> None:
    encoder = Encoder(
        Preprocessing(
            missing_tokens=[],
            features=[
                CategoricalFeature(
                    categories=["rød", "blå"], frequencies=[0.5, 0.4], other_rate=0.0, missing_rate=0.1
                )
            ],
        )
    )
    got = table_rows_from_columns(
        {"c": np.array(["rød".encode(), None, b"gr\xc3\xb8n"], dtype=object)}, ["c"], encoder
    )
    np.testing.assert_array_equal(got.x, [[1, 0, 0], [0, 0, 1], [0, 0, 0]])
    with pytest.raises(Unprocessable, match=r"expected UTF-8 text for feature 'c' at row 0"):
        table_rows_from_columns({"c": np.array([b"\xff"], dtype=object)}, ["c"], encoder)
