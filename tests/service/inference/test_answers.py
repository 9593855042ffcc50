"""The fast /predict answer is byte for byte the JSON of the answer dict, for any labels and numbers."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from service.inference.answers import DICT_PATH_ROWS, AnswerEncoder

SHA = "ab" * 32
LABELS = {
    "two": ["malignant", "benign"],
    "ten digits": [str(i) for i in range(10)],
    "JSON and % to escape": ['say "hi"', "50% off", "back\\slash", "tab\there", "ünïcødé ✓", "%s%%"],
}


def probabilities(rows: int, k: int, seed: int) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(0, 4, size=(rows, k))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("rows", [1, DICT_PATH_ROWS, DICT_PATH_ROWS + 1, 37, 1024])
@pytest.mark.parametrize("labels", list(LABELS))
def test_classification_answer_bytes_equal_orjson_of_the_dict(labels: str, rows: int) -> None:
    encoder = AnswerEncoder(model="m", artifact_sha256=SHA, class_labels=LABELS[labels])
    out = probabilities(rows, len(LABELS[labels]), seed=rows)
    out[0] = 1 / len(LABELS[labels])  # a tie: the first class wins, as argmax says

    encoded = encoder.encode(out)

    assert encoded == orjson.dumps(encoder.answer(out))
    answer = orjson.loads(encoded)
    assert answer["model"] == "m" and answer["artifact_sha256"] == SHA and len(answer["predictions"]) == rows
    assert answer["predictions"][0]["label"] == LABELS[labels][0]
    for got, p in zip(answer["predictions"], out, strict=True):
        assert list(got["probabilities"]) == LABELS[labels]
        assert np.array_equal(np.float32(list(got["probabilities"].values())), p)  # exact float32 round trip
        assert got["label"] == LABELS[labels][int(np.argmax(p))]


def test_regression_answer_bytes_equal_orjson_of_the_dict_even_for_odd_numbers() -> None:
    encoder = AnswerEncoder(model='quote" model', artifact_sha256=SHA, class_labels=None)
    values = np.random.default_rng(0).normal(150, 80, size=(200, 1)).astype(np.float32)
    values[:8, 0] = [0.0, -0.0, 3.4e38, -1e-45, 1e-7, np.inf, -np.inf, np.nan]

    encoded = encoder.encode(values)

    assert encoded == orjson.dumps(encoder.answer(values))
    predictions = orjson.loads(encoded)["predictions"]
    assert [p["value"] for p in predictions[5:8]] == [None, None, None]  # what orjson writes for inf and NaN
    assert np.array_equal(np.float32([p["value"] for p in predictions[8:]]), values[8:, 0])


@pytest.mark.parametrize(
    "row",
    [
        [np.nan, 0.5, 0.2],  # a NaN wins numpy's argmax wherever it is
        [0.5, np.nan, 0.7],
        [0.1, np.inf, -np.inf],  # inf - inf: a NaN in the sum, not in the row
        [np.inf, 0.5, np.inf],  # ties between infinities: the first
        [0.25, 0.5, 0.5],
        [-0.0, 0.0, -1e-45],
    ],
)
def test_a_single_row_answer_picks_the_label_numpy_picks_even_for_non_finite_numbers(
    row: list[float],
) -> None:
    labels = LABELS["JSON and % to escape"][:3]
    encoder = AnswerEncoder(model="m", artifact_sha256=SHA, class_labels=labels)
    out = np.array([row], dtype=np.float32)

    encoded = encoder.encode(out)

    assert encoded == orjson.dumps(encoder.answer(out))
    assert orjson.loads(encoded)["predictions"][0]["label"] == labels[int(np.argmax(out[0]))]
