"""The benchmark's correctness check: it must be able to fail, or its "all answers correct" means nothing."""

from __future__ import annotations

import numpy as np
import orjson

from bench.check import check_answer, check_oip_answer, oip_binary_body, oip_json_body, request_body
from bench.load import decode_answer

LABELS = ["malignant", "benign"]
EXPECTED = np.array([[0.9, 0.1], [0.25, 0.75]], dtype=np.float32)


def answer(rows: list[list[float]], labels: list[str] | None = None) -> dict:
    labels = labels or LABELS
    return {
        "predictions": [
            {"label": labels[int(np.argmax(p))], "probabilities": dict(zip(labels, p, strict=True))}
            for p in rows
        ]
    }


def test_the_check_passes_an_answer_within_1e_6() -> None:
    rows = (EXPECTED.astype(np.float64) + 4e-7).tolist()
    assert check_answer(answer(rows), EXPECTED, LABELS) is None


def test_the_check_flags_a_probability_off_by_more_than_1e_6() -> None:
    rows = EXPECTED.astype(np.float64).tolist()
    rows[1][0] += 3e-6
    problem = check_answer(answer(rows), EXPECTED, LABELS)
    assert problem is not None and "row 1" in problem


def test_the_check_flags_another_callers_rows() -> None:
    swapped = EXPECTED[::-1].astype(np.float64).tolist()
    assert check_answer(answer(swapped), EXPECTED, LABELS) is not None


def test_the_check_flags_a_missing_row_a_wrong_label_and_a_malformed_body() -> None:
    rows = EXPECTED.astype(np.float64).tolist()
    assert "expected 2 predictions" in (check_answer(answer(rows[:1]), EXPECTED, LABELS) or "")
    wrong_label = answer(rows)
    wrong_label["predictions"][0]["label"] = "benign"
    assert "label" in (check_answer(wrong_label, EXPECTED, LABELS) or "")
    assert check_answer({"error": "model not ready"}, EXPECTED, LABELS) is not None
    assert check_answer({"predictions": [{"label": "benign"}] * 2}, EXPECTED, LABELS) is not None


def test_the_check_reads_regression_values() -> None:
    expected = np.array([[151.25], [75.5]], dtype=np.float32)
    good = {"predictions": [{"value": 151.25}, {"value": 75.5}]}
    bad = {"predictions": [{"value": 151.25}, {"value": 75.51}]}
    assert check_answer(good, expected, None) is None
    assert check_answer(bad, expected, None) is not None


def test_request_bodies_parse_back_to_the_same_float32_rows() -> None:
    rows = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32) * 1000
    parsed = np.array(orjson.loads(request_body(rows))["instances"], dtype=np.float32)
    np.testing.assert_array_equal(parsed, rows)


def oip_answer(probabilities: np.ndarray, labels: list[str]) -> dict:
    return {
        "outputs": [
            {
                "name": "probabilities",
                "datatype": "FP32",
                "shape": list(probabilities.shape),
                "data": probabilities.ravel(),
            },
            {"name": "label", "datatype": "BYTES", "shape": [len(probabilities)], "data": labels},
        ]
    }


def test_the_oip_check_passes_a_close_answer_and_flags_wrong_numbers_labels_and_shapes() -> None:
    assert check_oip_answer(oip_answer(EXPECTED + 4e-7, ["malignant", "benign"]), EXPECTED, LABELS) is None
    off = EXPECTED.copy()
    off[1, 0] += 3e-6
    assert "row 1" in (check_oip_answer(oip_answer(off, ["malignant", "benign"]), EXPECTED, LABELS) or "")
    assert "label" in (check_oip_answer(oip_answer(EXPECTED, ["benign", "benign"]), EXPECTED, LABELS) or "")
    assert "shape" in (check_oip_answer(oip_answer(EXPECTED[:1], ["malignant"]), EXPECTED, LABELS) or "")
    assert check_oip_answer({"error": "not ready"}, EXPECTED, LABELS) is not None


def test_binary_oip_answers_decode_into_arrays_and_strings() -> None:
    labels = b"".join(len(s).to_bytes(4, "little") + s for s in (b"malignant", b"benign"))
    header = orjson.dumps(
        {
            "outputs": [
                {
                    "name": "probabilities",
                    "datatype": "FP32",
                    "shape": [2, 2],
                    "parameters": {"binary_data_size": 16},
                },
                {
                    "name": "label",
                    "datatype": "BYTES",
                    "shape": [2],
                    "parameters": {"binary_data_size": len(labels)},
                },
            ]
        }
    )
    body = header + EXPECTED.astype("<f4").tobytes() + labels
    answer = decode_answer(body, {b"inference-header-content-length": str(len(header)).encode()})
    assert check_oip_answer(answer, EXPECTED, LABELS) is None
    assert answer["outputs"][1]["data"] == ["malignant", "benign"]


def test_oip_request_bodies_carry_the_same_float32_rows() -> None:
    rows = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32) * 1000
    parsed = orjson.loads(oip_json_body(rows))["inputs"][0]
    assert parsed["shape"] == [3, 4]
    np.testing.assert_array_equal(np.array(parsed["data"], dtype=np.float32).reshape(3, 4), rows)
    body, headers = oip_binary_body(rows, ["probabilities"])
    n = int(headers["Inference-Header-Content-Length"])
    assert orjson.loads(body[:n])["inputs"][0]["parameters"]["binary_data_size"] == rows.nbytes
    np.testing.assert_array_equal(np.frombuffer(body[n:], dtype="<f4").reshape(3, 4), rows)


def test_free_port_finds_a_run_of_free_ports_past_one_taken() -> None:
    """TorchServe listens on its port and the five after it: the benchmark asks for six in a row."""
    import socket

    from bench.load import free_port

    port = free_port(6)
    held = []
    try:
        for p in range(port, port + 6):  # every one of them can be listened on
            s = socket.socket()
            s.bind(("127.0.0.1", p))
            s.listen()
            held.append(s)
        # With the run taken, the next answer is another run of six, not overlapping this one.
        other = free_port(6)
        assert not set(range(other, other + 6)) & set(range(port, port + 6))
    finally:
        for s in held:
            s.close()
