"""The Open Inference Protocol codec (service/inference/oip.py): requests in every form the protocol allows,
every refusal it owes, and responses as JSON and binary tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from models.signature import Signature, TensorSpec
from service.errors import BadRequest, PayloadTooLarge, ServiceError
from service.inference.inputs import media_type
from service.inference.oip import (
    HEADER_LENGTH,
    InferRequest,
    InferResponseEncoder,
    RequestedOutput,
    parse_infer_request,
    tensor_metadata,
)

FEATURES = ["a", "b", "c"]
CLASSIFIER = Signature(
    inputs=(TensorSpec("input", "FP32", (-1, 3)),),
    outputs=(
        TensorSpec("probabilities", "FP32", (-1, 2)),
        TensorSpec("label", "BYTES", (-1,)),
        TensorSpec("logits", "FP32", (-1, 2), default=False),
    ),
)
REGRESSOR = Signature(inputs=CLASSIFIER.inputs, outputs=(TensorSpec("value", "FP32", (-1, 1)),))
ROWS = np.array([[1.5, -2.0, 3.25], [0.0, 4.0, -1.0]], dtype=np.float32)


def parse(
    body: bytes | dict[str, Any],
    header_length: int | bytes | None = None,
    *,
    signature: Signature = CLASSIFIER,
    max_rows: int = 100,
) -> InferRequest:
    raw = orjson.dumps(body) if isinstance(body, dict) else body
    length = b"%d" % header_length if isinstance(header_length, int) else header_length
    return parse_infer_request(raw, length, feature_names=FEATURES, signature=signature, max_rows=max_rows)


def tensor(data: Any, shape: list[int], datatype: str = "FP32", name: str = "input") -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def binary_request(
    arrays: dict[str, np.ndarray], *, datatype: str = "FP32", extra: dict[str, Any] | None = None
) -> tuple[bytes, int]:
    """Gives back (body, JSON header length) of a request carrying ``arrays`` as binary tensors."""
    inputs = [
        {
            "name": name,
            "shape": list(a.shape),
            "datatype": datatype,
            "parameters": {"binary_data_size": a.nbytes},
        }
        for name, a in arrays.items()
    ]
    header = orjson.dumps({"inputs": inputs, **(extra or {})})
    return header + b"".join(a.tobytes() for a in arrays.values()), len(header)


def refusal(body: bytes | dict[str, Any], header_length: int | bytes | None = None, **kw: Any) -> str:
    with pytest.raises(ServiceError) as caught:
        parse(body, header_length, **kw)
    assert isinstance(caught.value, BadRequest | PayloadTooLarge)
    return caught.value.message


# ---------------------------------------------------------------------------------------------- inputs


def test_flat_and_nested_json_data_give_the_same_rows() -> None:
    flat = parse({"inputs": [tensor(ROWS.ravel().tolist(), [2, 3])]})
    nested = parse({"inputs": [tensor(ROWS.tolist(), [2, 3])]})
    assert flat.rows.dtype == np.float32 and flat.rows.shape == (2, 3)
    np.testing.assert_array_equal(flat.rows, ROWS)
    np.testing.assert_array_equal(nested.rows, ROWS)


def test_binary_tensor_gives_the_same_rows_as_json() -> None:
    body, length = binary_request({"input": ROWS})
    request = parse(body, length)
    np.testing.assert_array_equal(request.rows, ROWS)
    request.rows[0, 0] = 9.0  # the batcher may write into its rows: a copy, not a view of the body


@pytest.mark.parametrize(
    ("datatype", "dtype"),
    [
        ("FP64", "<f8"),
        ("INT32", "<i4"),
        ("INT64", "<i8"),
        ("UINT8", "u1"),
        ("INT16", "<i2"),
        ("UINT64", "<u8"),
    ],
)
def test_fp64_and_integer_tensors_are_converted_to_float32_in_json_and_binary(
    datatype: str, dtype: str
) -> None:
    values = np.array([[1, 2, 3], [4, 5, 6]], dtype=dtype)
    as_json = parse({"inputs": [tensor(values.tolist(), [2, 3], datatype)]})
    body, length = binary_request({"input": values}, datatype=datatype)
    as_binary = parse(body, length)
    for request in (as_json, as_binary):
        assert request.rows.dtype == np.float32
        np.testing.assert_array_equal(request.rows, values.astype(np.float32))


def test_one_tensor_per_feature_is_assembled_in_feature_order_whatever_the_tensor_order() -> None:
    columns = {name: ROWS[:, j] for j, name in enumerate(FEATURES)}
    shuffled = [
        tensor(columns["c"].tolist(), [2], name="c"),
        tensor([[v] for v in columns["a"].tolist()], [2, 1], name="a"),
        tensor(columns["b"].tolist(), [2], "FP64", name="b"),
    ]
    np.testing.assert_array_equal(parse({"inputs": shuffled}).rows, ROWS)
    body, length = binary_request({"b": ROWS[:, 1], "a": ROWS[:, 0], "c": ROWS[:, 2].reshape(2, 1)})
    np.testing.assert_array_equal(parse(body, length).rows, ROWS)


def test_json_and_binary_inputs_mix_in_one_request() -> None:
    b = ROWS[:, 1].copy()
    header = orjson.dumps(
        {
            "inputs": [
                tensor(ROWS[:, 0].tolist(), [2], name="a"),
                {"name": "b", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
                tensor(ROWS[:, 2].tolist(), [2], name="c"),
            ]
        }
    )
    np.testing.assert_array_equal(parse(header + b.tobytes(), len(header)).rows, ROWS)


def test_id_and_parameters_are_kept_and_an_absent_outputs_list_means_the_default_outputs() -> None:
    request = parse({"id": "42", "parameters": {"priority": 1}, "inputs": [tensor([1, 2, 3], [1, 3])]})
    assert request.id == "42" and request.parameters == {"priority": 1}
    assert request.outputs == (RequestedOutput("probabilities", False), RequestedOutput("label", False))
    assert not request.wants_logits


def test_requested_outputs_select_and_order_the_answer_and_binary_flags_override_the_default() -> None:
    request = parse(
        {
            "parameters": {"binary_data_output": True},
            "inputs": [tensor([1, 2, 3], [1, 3])],
            "outputs": [{"name": "logits"}, {"name": "label", "parameters": {"binary_data": False}}],
        }
    )
    assert request.outputs == (RequestedOutput("logits", True), RequestedOutput("label", False))
    assert request.wants_logits


def test_media_type_ignores_parameters_and_case() -> None:
    assert media_type(b"Application/JSON; charset=utf-8") == b"application/json"
    assert media_type(b"") == b""


# ---------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("datatype", ["BYTES", "BOOL", "FP16", "BF16"])
def test_a_datatype_other_than_numbers_is_refused_naming_the_tensor(datatype: str) -> None:
    message = refusal({"inputs": [tensor([1, 2, 3], [1, 3], datatype)]})
    assert "input 'input'" in message and f"datatype {datatype}" in message and "FP32" in message


def test_an_unknown_datatype_is_refused_as_not_a_protocol_datatype() -> None:
    assert "not a protocol datatype" in refusal({"inputs": [tensor([1, 2, 3], [1, 3], "FLOAT")]})


@pytest.mark.parametrize(
    ("data", "shape", "expected"),
    [
        ([1, 2, 3, 4], [1, 3], "shape [1, 3] holds 3 values, but 'data' holds 4"),
        ([1, 2], [1, 3], "holds 3 values, but 'data' holds 2"),
        ([[1, 2, 3], [4, 5]], [2, 3], "lists of unequal lengths"),
        ([[1, 2], [3, 4], [5, 6]], [2, 3], "nested as [3, 2], which is not its shape [2, 3]"),
        ([1, 2, 3], [3], "expected shape [B, 3]"),
        ([1, 2, 3, 4, 5, 6], [2, 3, 1], "1 or 2 dimensions"),
        ([1, 2, 3], [1, -3], "non-negative integers"),
        ([1, 2, 3], [1, 3.0], "non-negative integers"),
        ([1, 2, 3], [True, 3], "non-negative integers"),
        ([1, 2, 3], "1,3", "non-negative integers"),
        ([1, 2], [1, 2], "expected shape [B, 3]"),
    ],
)
def test_a_shape_that_does_not_match_the_data_or_the_model_is_refused(
    data: Any, shape: Any, expected: str
) -> None:
    assert expected in refusal({"inputs": [tensor(data, shape)]})


def test_a_shape_whose_product_overflows_64_bits_is_refused_without_allocating() -> None:
    huge = 2**40
    message = refusal({"inputs": [tensor([1, 2, 3], [huge, huge])]})
    assert f"{huge * huge} values" in message
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [huge, 3],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 12},
                }
            ]
        }
    )
    assert f"is {huge * 3 * 4} bytes, but binary_data_size says 12" in refusal(
        header + bytes(12), len(header)
    )
    beyond_uint64 = (
        b'{"inputs":[{"name":"input","shape":[18446744073709551616,1],"datatype":"FP32","data":[1]}]}'
    )
    assert "non-negative integers" in refusal(beyond_uint64)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([1, "2", 3], "got str '2'"),
        ([1, True, 3], "got bool True"),
        ([1, None, 3], "got NoneType None"),
        ([True, False, True], "got bool True"),
        ([1, {"x": 1}, 3], "got dict"),
    ],
)
def test_data_that_is_not_numbers_is_refused_naming_the_value(data: Any, expected: str) -> None:
    message = refusal({"inputs": [tensor(data, [1, 3])]})
    assert "input 'input'" in message and expected in message


def test_nan_and_infinity_are_refused_in_json_and_in_binary_naming_the_index() -> None:
    body = b'{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[1.0, NaN, 2.0]}]}'
    assert "expected finite numbers, got nan at index [0, 1]" in refusal(body)
    for bad in (np.nan, np.inf, -np.inf):
        rows = ROWS.copy()
        rows[1, 2] = bad
        binary, length = binary_request({"input": rows})
        assert "at index [1, 2]" in refusal(binary, length)
    assert "beyond float32's range" in refusal({"inputs": [tensor([1, 1e39, 3], [1, 3], "FP64")]})


def test_integer_datatypes_refuse_fractions_and_values_beyond_their_range() -> None:
    assert "not integers" in refusal({"inputs": [tensor([1.5, 2, 3], [1, 3], "INT32")]})
    assert "holds -128..127" in refusal({"inputs": [tensor([1, 300, 3], [1, 3], "INT8")]})


def test_a_header_length_beyond_the_body_is_refused_with_both_sizes() -> None:
    body, _ = binary_request({"input": ROWS})
    message = refusal(body, len(body) + 1)
    assert f"says the JSON header is {len(body) + 1} bytes, but the body holds only {len(body)}" in message
    assert "JSON header's length in bytes, got '-5'" in refusal(body, b"-5")
    assert "got 'ten'" in refusal(body, b"ten")


def test_a_binary_data_size_that_disagrees_with_shape_and_datatype_is_refused() -> None:
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "input", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 20}}
            ]
        }
    )
    message = refusal(header + bytes(20), len(header))
    assert "shape [2, 3] of FP32 is 24 bytes, but binary_data_size says 20" in message


def test_binary_data_shorter_or_longer_than_declared_is_refused() -> None:
    body, length = binary_request({"input": ROWS})
    assert "only 16 bytes are there" in refusal(body[:-8], length)
    assert "add up to 24 bytes, but 25 bytes follow" in refusal(body + b"\0", length)


def test_binary_data_size_without_the_header_length_is_refused() -> None:
    body, length = binary_request({"input": ROWS})
    assert "no Inference-Header-Content-Length" in refusal(body[:length])
    assert "needs an Inference-Header-Content-Length header" in refusal(body)


def test_integers_too_long_for_64_bits_are_refused_as_beyond_float32() -> None:
    body = b'{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[1,' + b"9" * 41 + b",3]}]}"
    assert "beyond float32's range" in refusal(body)


def test_a_tensor_with_both_data_and_binary_data_size_is_refused() -> None:
    spec = {**tensor([1, 2, 3], [1, 3]), "parameters": {"binary_data_size": 12}}
    header = orjson.dumps({"inputs": [spec]})
    assert "both 'data' and binary_data_size" in refusal(header + bytes(12), len(header))


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ([tensor([1, 2, 3], [1, 3], name="x")], "unknown input 'x'"),
        ([tensor([1, 2, 3], [1, 3]), tensor([1], [1], name="a")], "either one tensor 'input'"),
        ([tensor([1, 2, 3], [1, 3]), tensor([1, 2, 3], [1, 3])], "input 'input' is given twice"),
        ([tensor([1], [1], name="a"), tensor([2], [1], name="b")], "missing input 'c'"),
        (
            [tensor([1], [1], name="a"), tensor([2, 3], [2], name="b"), tensor([3], [1], name="c")],
            "expected shape [1] or [1, 1] like 'a', got [2]",
        ),
        ([], "non-empty list of tensors"),
        ([["input"]], "inputs[0] to be a tensor object"),
        ([{"shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}], "string 'name'"),
        ([{"name": "input", "shape": [1, 3], "datatype": "FP32"}], "no 'data' and no binary_data_size"),
    ],
)
def test_inputs_other_than_one_input_tensor_or_one_tensor_per_feature_are_refused(
    inputs: list[Any], expected: str
) -> None:
    assert expected in refusal({"inputs": inputs})


def test_zero_rows_and_more_rows_than_allowed_are_refused() -> None:
    assert "at least one row" in refusal({"inputs": [tensor([], [0, 3])]})
    with pytest.raises(PayloadTooLarge, match="at most 1 rows per request, got 2"):
        parse({"inputs": [tensor(ROWS.tolist(), [2, 3])]}, max_rows=1)


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        ([{"name": "value"}], "unknown output 'value': this model gives probabilities, label, logits"),
        ([{"name": "label"}, {"name": "label"}], "output 'label' is requested twice"),
        ([{"nom": "label"}], "string 'name'"),
        ([], "non-empty list"),
        ([{"name": "label", "parameters": {"binary_data": "yes"}}], "'binary_data' of output 'label'"),
        ([{"name": "probabilities", "parameters": {"classification": 2}}], "classification extension"),
        ([{"name": "label", "parameters": {"shared_memory_region": "r"}}], "shared memory"),
    ],
)
def test_unknown_or_malformed_requested_outputs_are_refused(outputs: list[Any], expected: str) -> None:
    assert expected in refusal({"inputs": [tensor([1, 2, 3], [1, 3])], "outputs": outputs})


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "malformed JSON"),
        (b"[1, 2]", "inference request JSON object, got list"),
        (orjson.dumps({"id": 42, "inputs": [tensor([1, 2, 3], [1, 3])]}), "'id' to be a string"),
        (
            orjson.dumps({"parameters": [], "inputs": [tensor([1, 2, 3], [1, 3])]}),
            "parameters of the request",
        ),
        (orjson.dumps({"instances": [[1, 2, 3]]}), "got nothing"),
    ],
)
def test_a_body_that_is_not_an_inference_request_is_refused(body: bytes, expected: str) -> None:
    assert expected in refusal(body)


# ---------------------------------------------------------------------------------------------- responses


def classifier_encoder() -> InferResponseEncoder:
    return InferResponseEncoder(
        model_name="m", model_version="1", signature=CLASSIFIER, class_labels=["no", "yés"]
    )


def split(body: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[dict[str, Any], bytes]:
    length = dict(headers).get(HEADER_LENGTH)
    if length is None:
        return orjson.loads(body), b""
    return orjson.loads(body[: int(length)]), body[int(length) :]


PROBABILITIES = np.array([[0.25, 0.75], [0.9, 0.1]], dtype=np.float32)
LOGITS = np.array([[-1.0, 0.1], [2.0, -0.2]], dtype=np.float32)


def test_json_response_carries_the_model_version_id_and_each_requested_output() -> None:
    request = InferRequest(
        rows=ROWS,
        outputs=(RequestedOutput("label", False), RequestedOutput("probabilities", False)),
        id="req-1",
    )
    body, headers = classifier_encoder().encode(request, PROBABILITIES)
    assert dict(headers)[b"content-type"] == b"application/json"
    response, rest = split(body, headers)
    assert rest == b""
    assert (response["model_name"], response["model_version"], response["id"]) == ("m", "1", "req-1")
    label, probabilities = response["outputs"]
    assert label == {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["yés", "no"]}
    assert probabilities["shape"] == [2, 2] and probabilities["datatype"] == "FP32"
    # Each number is the float32's exact value, as /predict writes it: the float64 JSON reads back bit for bit.
    assert (
        np.array(probabilities["data"], dtype=np.float64).astype(np.float32).tobytes()
        == PROBABILITIES.tobytes()
    )
    assert probabilities["data"] == PROBABILITIES.astype(np.float64).ravel().tolist()


def test_response_without_a_request_id_has_no_id() -> None:
    request = InferRequest(rows=ROWS, outputs=(RequestedOutput("label", False),))
    body, headers = classifier_encoder().encode(request, PROBABILITIES)
    assert "id" not in split(body, headers)[0]


def test_binary_outputs_follow_the_json_header_in_request_order_with_bytes_length_prefixed() -> None:
    request = InferRequest(
        rows=ROWS,
        outputs=(
            RequestedOutput("logits", True),
            RequestedOutput("probabilities", False),
            RequestedOutput("label", True),
        ),
    )
    body, headers = classifier_encoder().encode(request, PROBABILITIES, LOGITS)
    assert dict(headers)[b"content-type"] == b"application/octet-stream"
    response, raw = split(body, headers)
    logits, probabilities, label = response["outputs"]
    assert "data" not in logits and logits["parameters"] == {"binary_data_size": 16}
    assert probabilities["data"] == PROBABILITIES.astype(np.float64).ravel().tolist()
    label_bytes = (4).to_bytes(4, "little") + "yés".encode() + (2).to_bytes(4, "little") + b"no"
    assert label["parameters"] == {"binary_data_size": len(label_bytes)}
    assert raw == LOGITS.astype("<f4").tobytes() + label_bytes


def test_regressor_response_gives_values_of_shape_b_by_1() -> None:
    encoder = InferResponseEncoder(model_name="r", model_version="1", signature=REGRESSOR, class_labels=None)
    values = np.array([[10.5], [-3.25]], dtype=np.float32)
    body, headers = encoder.encode(InferRequest(rows=ROWS, outputs=(RequestedOutput("value", True),)), values)
    response, raw = split(body, headers)
    assert response["outputs"][0]["shape"] == [2, 1]
    assert np.frombuffer(raw, dtype="<f4").tolist() == [10.5, -3.25]


def test_the_request_body_round_trips_into_the_response_numbers() -> None:
    """What a client sends as binary comes back, through the codec alone, as the same float32 bits."""
    body, length = binary_request(
        {"input": ROWS}, extra={"outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}
    )
    request = parse(body, length)
    out, headers = classifier_encoder().encode(request, request.rows[:, :2].copy())
    assert split(out, headers)[1] == ROWS[:, :2].tobytes()


def test_tensor_metadata_lists_names_datatypes_and_shapes_with_minus_one_for_the_batch() -> None:
    assert tensor_metadata(CLASSIFIER) == {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "logits", "datatype": "FP32", "shape": [-1, 2]},
        ],
    }


@pytest.mark.parametrize("rows", [1, 2, 8, 9, 300])
def test_spliced_json_is_byte_for_byte_orjson_of_the_response_object(rows: int) -> None:
    """Small and large batches take different encoding paths; both must give what orjson.dumps gives."""
    rng = np.random.default_rng(rows)
    probabilities = rng.dirichlet([1, 1], size=rows).astype(np.float32)
    logits = rng.normal(size=(rows, 2)).astype(np.float32)
    request = InferRequest(
        rows=np.zeros((rows, 3), dtype=np.float32),
        outputs=(
            RequestedOutput("probabilities", False),
            RequestedOutput("label", False),
            RequestedOutput("logits", False),
        ),
        id='q"1',
    )
    body, _ = classifier_encoder().encode(request, probabilities, logits)
    labels = ["no", "yés"]
    expected = {
        "model_name": "m",
        "model_version": "1",
        "id": 'q"1',
        "outputs": [
            {
                "name": "probabilities",
                "datatype": "FP32",
                "shape": [rows, 2],
                "data": probabilities.ravel().tolist(),
            },
            {
                "name": "label",
                "datatype": "BYTES",
                "shape": [rows],
                "data": [labels[i] for i in probabilities.argmax(1)],
            },
            {"name": "logits", "datatype": "FP32", "shape": [rows, 2], "data": logits.ravel().tolist()},
        ],
    }
    assert body == orjson.dumps(expected)


def test_a_label_tie_goes_to_the_first_class_in_small_and_large_batches() -> None:
    for rows in (1, 50):
        tied = np.full((rows, 2), 0.5, dtype=np.float32)
        request = InferRequest(
            rows=np.zeros((rows, 3), dtype=np.float32), outputs=(RequestedOutput("label", False),)
        )
        body, headers = classifier_encoder().encode(request, tied)
        assert split(body, headers)[0]["outputs"][0]["data"] == ["no"] * rows
