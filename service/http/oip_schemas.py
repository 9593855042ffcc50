"""The Open Inference Protocol's messages as pydantic models, for the routes' answers and the OpenAPI docs.

Field names and meanings are the protocol's (kserve/open-inference-protocol, specification/protocol/
inference_rest.md) and Triton's binary tensor data extension; the inference hot path encodes and parses them
itself (service/inference/oip.py), these models describe what it reads and writes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

TensorData = list[Any]  # flat or nested, row-major: numbers, or strings for BYTES


class ServerMetadata(BaseModel):
    name: str = Field(description="the server", examples=["bnserve"])
    version: str = Field(description="the server's version")
    extensions: list[str] = Field(
        description="protocol extensions: binary_tensor_data (Triton's binary tensor data extension)"
    )


class ServerLive(BaseModel):
    live: bool = Field(description="the process answers")


class ServerReady(BaseModel):
    ready: bool = Field(description="every model is loaded and passed its self-test (503 otherwise)")


class ModelReady(BaseModel):
    name: str
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str = Field(description="the protocol's datatype: FP32, BYTES, ...")
    shape: list[int] = Field(description="-1 for the batch dimension")


class ModelMetadata(BaseModel):
    name: str = Field(description="the model, as /v2/models/{model} names it")
    versions: list[str] = Field(description="the versions /v2/models/{model}/versions/{version} accepts")
    platform: str = Field(description="the runtime that serves it")
    inputs: list[TensorMetadata] = Field(
        description="the input tensor: rows in /metadata feature order (one tensor per feature, named by the "
        "feature, shape [-1] or [-1, 1], is accepted too)"
    )
    outputs: list[TensorMetadata] = Field(
        description="the outputs; a request without 'outputs' gets all but logits"
    )


class RequestInput(BaseModel):
    name: str = Field(description="'input', or a feature's name")
    shape: list[int] = Field(description="[B, F] for 'input'; [B] or [B, 1] for a feature")
    datatype: str = Field(description="FP32; FP64 and integer types are converted")
    parameters: dict[str, Any] | None = Field(
        None,
        description="binary_data_size: the tensor's bytes follow the JSON (binary tensor data extension)",
    )
    data: TensorData | None = Field(None, description="the values, flat or nested, row-major")


class RequestOutput(BaseModel):
    name: str = Field(description="probabilities, label or logits (classifier); value (regressor)")
    parameters: dict[str, Any] | None = Field(
        None, description="binary_data: answer this tensor as raw bytes"
    )


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str | None = Field(None, description="echoed in the response")
    parameters: dict[str, Any] | None = Field(
        None, description="binary_data_output: answer every output as raw bytes unless it says otherwise"
    )
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = Field(None, description="a subset of the outputs, in answer order")


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = Field(None, description="binary_data_size when sent as raw bytes")
    data: TensorData | None = Field(None, description="flat, row-major; absent when sent as raw bytes")


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = Field(None, description="the request's id, when it had one")
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]
