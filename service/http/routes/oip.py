"""The Open Inference Protocol (KServe's V2 protocol, Triton's HTTP API) under /v2: what tritonclient and
KServe speak.

    GET  /v2                                                  server metadata (extensions: binary_tensor_data)
    GET  /v2/health/live, /v2/health/ready                    probes (ready: 503 until the model is)
    GET  /v2/models/{model}[/versions/{version}]              model metadata: tensor names, datatypes, shapes
    GET  /v2/models/{model}[/versions/{version}]/ready
    POST /v2/models/{model}[/versions/{version}]/infer        inference, JSON or binary tensors

``infer`` is a hot route like POST /predict (service/http/hot.py): answered straight from the HTTP parser
(service/http/protocol.py), or by ``BNServe`` (service/http/asgi.py) before FastAPI's stack. Its rows go
through the same predictor, micro-batcher, folded network and drift monitor as /predict's, so the same rows
give the same numbers, merged into the same forward passes. The message formats are
service/inference/oip.py's; the tensor names models/signature.py's.

Which model a path names is decided by ``lease_served`` alone (``served_model`` is its context manager,
``Infer.begin`` holds its lease until the answer is built): the model repository's registry
(service/inference/repository) resolves the name and version, and the request holds that one version until
its answer is built, as /predict does. A single artifact is a one-model repository, served under its manifest
name (or ``BNSERVE_MODEL_NAME``), version "1".
"""

from __future__ import annotations

import weakref
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from starlette.datastructures import State
from starlette.routing import Route
from starlette.types import Scope

from models import __version__
from models.repository import MODEL_NAME_PATTERN, VERSION_PATTERN
from models.signature import Signature, signature
from service.errors import BadRequest, NotReady, PayloadTooLarge, ServiceError, UnsupportedMediaType
from service.http.auth import ReadersOnly, check_reader
from service.http.hot import HotRoute, HotState, Job
from service.http.oip_schemas import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    ModelReady,
    ServerLive,
    ServerMetadata,
    ServerReady,
)
from service.http.routes.predict import _schema
from service.http.schemas import ErrorResponse
from service.inference.inputs import media_type
from service.inference.oip import (
    BINARY_MEDIA_TYPE,
    HEADER_LENGTH,
    READ_MEDIA_TYPES,
    InferResponseEncoder,
    parse_infer_request,
    tensor_metadata,
)
from service.inference.predictor import Predictor
from service.inference.repository import ModelRegistry
from service.inference.repository.registry import Lease

SERVER_NAME = "bnserve"
EXTENSIONS = ["binary_tensor_data"]
PLATFORM = "bnserve_pytorch"  # Triton's "<runtime>_<format>" style: bnserve serving a PyTorch network
MODELS = "/v2/models/"
INFER = "/infer"
INFER_ROUTES = (f"{MODELS}{{model}}{INFER}", f"{MODELS}{{model}}/versions/{{version}}{INFER}")
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 401, 404, 503)}

router = APIRouter(tags=["open inference protocol"])
# The patterns are documented, not enforced here: the registry refuses a bad name with a 400 saying why.
ModelPath = Annotated[str, Path(json_schema_extra={"pattern": MODEL_NAME_PATTERN})]
VersionPath = Annotated[str, Path(json_schema_extra={"pattern": VERSION_PATTERN})]


@dataclass(frozen=True)
class ServedModel:
    """One model as the protocol addresses it."""

    name: str
    version: str
    predictor: Predictor
    signature: Signature
    encoder: InferResponseEncoder
    feature_names: list[str]


def lease_served(
    registry: ModelRegistry[Predictor], name: str, version: str | None
) -> tuple[Lease[Predictor], ServedModel]:
    """Gives back a hold on the model version that ``/v2/models/{name}[/versions/{version}]`` names (the
    caller releases it) and its protocol view; raises BadRequest (400) for a malformed name or version,
    NotFound (404) for one not in the repository or not serving, NotReady (503) while the model has no
    version ready, holding nothing.

    ``version`` None is the server's choice: the highest version serving.
    """
    lease = registry.lease(name, version)
    try:
        return lease, _served(lease.value)
    except BaseException:
        lease.release()
        raise


@contextmanager
def served_model(state: State, name: str, version: str | None) -> Iterator[ServedModel]:
    """Yields what ``lease_served`` gives, the version held until the caller is done with it."""
    lease, served = lease_served(state.registry, name, version)
    with lease:
        yield served


_SERVED: weakref.WeakKeyDictionary[Predictor, ServedModel] = weakref.WeakKeyDictionary()


def _served(predictor: Predictor) -> ServedModel:
    """Gives back the protocol's view of a loaded version, built once per version."""
    served = _SERVED.get(predictor)
    if served is None:
        m = predictor.require_ready().manifest
        sig = signature(m)
        name = predictor.model or m.name
        encoder = InferResponseEncoder(
            model_name=name, model_version=predictor.version, signature=sig, class_labels=m.class_labels
        )
        served = ServedModel(name, predictor.version, predictor, sig, encoder, m.feature_names)
        _SERVED[predictor] = served
    return served


# ---------------------------------------------------------------------------------------------- health, metadata


@router.get("/v2", response_model=ServerMetadata, summary="Server metadata")
def server_metadata() -> ServerMetadata:
    return ServerMetadata(name=SERVER_NAME, version=__version__, extensions=EXTENSIONS)


@router.get("/v2/health/live", response_model=ServerLive, summary="Live: the process answers")
def server_live() -> ServerLive:
    return ServerLive(live=True)


@router.get(
    "/v2/health/ready",
    response_model=ServerReady,
    responses={503: {"model": ErrorResponse}},
    summary="Ready: the model is loaded and passed its self-test (503 otherwise)",
)
def server_ready(request: Request) -> ServerReady:
    registry: ModelRegistry[Predictor] = request.app.state.registry
    try:
        registry.lease().release()
    except ServiceError as e:  # the default model has no version serving
        raise NotReady(f"not ready: {e.message}") from None
    return ServerReady(ready=True)


@router.get(
    "/v2/models/{model}",
    response_model=ModelMetadata,
    responses=_ERRORS,
    summary="Model metadata",
    dependencies=[ReadersOnly],
)
def model_metadata(request: Request, model: ModelPath) -> ModelMetadata:
    return _metadata(request, model, None)


@router.get(
    "/v2/models/{model}/versions/{version}",
    response_model=ModelMetadata,
    responses=_ERRORS,
    summary="Model metadata of one version",
    dependencies=[ReadersOnly],
)
def model_version_metadata(request: Request, model: ModelPath, version: VersionPath) -> ModelMetadata:
    return _metadata(request, model, version)


def _metadata(request: Request, model: str, version: str | None) -> ModelMetadata:
    registry: ModelRegistry[Predictor] = request.app.state.registry
    with served_model(request.app.state, model, version) as served:
        return ModelMetadata(
            name=served.name,
            versions=[str(v) for v in registry.serving_versions(served.name)],
            platform=PLATFORM,
            **tensor_metadata(served.signature),
        )


@router.get(
    "/v2/models/{model}/ready",
    response_model=ModelReady,
    responses=_ERRORS,
    summary="Model ready",
    dependencies=[ReadersOnly],
)
def model_ready(request: Request, model: ModelPath) -> ModelReady:
    with served_model(request.app.state, model, None) as served:
        return ModelReady(name=served.name, ready=True)


@router.get(
    "/v2/models/{model}/versions/{version}/ready",
    response_model=ModelReady,
    responses=_ERRORS,
    summary="Model version ready",
    dependencies=[ReadersOnly],
)
def model_version_ready(request: Request, model: ModelPath, version: VersionPath) -> ModelReady:
    with served_model(request.app.state, model, version) as served:
        return ModelReady(name=served.name, ready=True)


# ---------------------------------------------------------------------------------------------- inference


def infer_target(path: str) -> tuple[str, str | None] | None:
    """Gives back (model, version or None) of an inference path, or None for any other path."""
    if not (path.startswith(MODELS) and path.endswith(INFER)):
        return None
    parts = path[len(MODELS) : -len(INFER)].split("/")
    if len(parts) == 1 and parts[0]:
        return parts[0], None
    if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
        return parts[0], parts[2]
    return None


@dataclass(slots=True)
class _Checked:
    target: tuple[str, str | None]  # (model, version or None)
    header_length: bytes | None
    encoding: bytes
    declared: bytes | None


class Infer(HotRoute[_Checked]):
    """POST /v2/models/{model}[/versions/{version}]/infer as a hot route (service/http/hot.py): the ASGI app
    ``BNServe`` hands it to, and the steps the protocol fast path runs."""

    def check(self, hot: HotState, scope: Scope) -> _Checked:
        settings = hot.settings
        target = infer_target(scope["path"])
        assert target is not None  # only inference paths are dispatched here
        content_type, declared, header_length, encoding, authorization = b"", None, None, b"", None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value
            elif name == b"content-length":
                declared = value
            elif name == HEADER_LENGTH:
                header_length = value
            elif name == b"content-encoding":
                encoding = value.strip().lower()
        if settings.read_token is not None:
            check_reader(settings, authorization)
        if media_type(content_type) not in READ_MEDIA_TYPES:
            raise UnsupportedMediaType(
                "expected no Content-Type, application/json or application/octet-stream (JSON, then binary "
                "tensors as the Inference-Header-Content-Length header says; curl's "
                f"application/x-www-form-urlencoded is read the same way), got {content_type.decode('latin-1')!r}"
            )
        return _Checked(target, header_length, encoding, declared)

    def begin(self, hot: HotState, scope: Scope, checked: _Checked, body: bytes) -> Job:
        settings = hot.settings
        if checked.encoding not in (b"", b"identity"):
            body = _decompress(body, checked.encoding, settings.max_body_bytes)
        lease, served = lease_served(hot.registry, *checked.target)  # the whole request: this one version
        try:
            request = parse_infer_request(
                body,
                checked.header_length,
                feature_names=served.feature_names,
                signature=served.signature,
                max_rows=settings.max_rows,
                encoder=served.predictor.encoder,
            )
        except BaseException:
            lease.release()
            raise
        encoder = served.encoder
        return Job(lease, request.rows, lambda out, logits: (200, *encoder.encode(request, out, logits)))

    @staticmethod
    def openapi(components: dict[str, Any]) -> dict[str, Any]:
        """Gives back the OpenAPI path items of the two inference paths; adds their schemas to ``components``."""
        request = _schema(InferenceRequest, components, mode="validation")
        answer = _schema(InferenceResponse, components)
        error = {"content": {"application/json": {"schema": _schema(ErrorResponse, components)}}}
        binary = {
            "schema": {
                "type": "string",
                "format": "binary",
                "description": "the JSON object (its length in the Inference-Header-Content-Length header), "
                "then each binary tensor's raw little-endian bytes in tensor order (BYTES: a 4-byte length and "
                "the bytes of each element)",
            }
        }
        operation = {
            "tags": ["open inference protocol"],
            "summary": "Inference: rows in, the requested outputs out (JSON or binary tensors)",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": request}, BINARY_MEDIA_TYPE.decode(): binary},
            },
            "responses": {
                "200": {
                    "description": "the outputs; raw tensors after the JSON when binary_data was asked for",
                    "content": {"application/json": {"schema": answer}, BINARY_MEDIA_TYPE.decode(): binary},
                },
                "400": {"description": "not a valid inference request for this model", **error},
                "404": {"description": "no such model or version", **error},
                "413": {"description": "body or row count over the limits", **error},
                "415": {"description": "a media type or content encoding that is not read", **error},
                "503": {"description": "the model is not ready", **error},
            },
        }
        model = {
            "name": "model",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": MODEL_NAME_PATTERN},
        }
        version = {
            "name": "version",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": VERSION_PATTERN},
        }
        return {
            INFER_ROUTES[0]: {"post": {**operation, "operationId": "infer", "parameters": [model]}},
            INFER_ROUTES[1]: {
                "post": {**operation, "operationId": "infer_version", "parameters": [model, version]}
            },
        }


infer = Infer()
routes = [Route(path, endpoint=infer, methods=["POST"]) for path in INFER_ROUTES]  # other methods: 405


def _decompress(body: bytes, encoding: bytes, limit: int) -> bytes:
    """Gives back a gzip or deflate body decompressed (tritonclient's request_compression_algorithm), at most
    ``limit`` bytes of it."""
    wbits = {b"gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}.get(encoding)
    if wbits is None:
        raise UnsupportedMediaType(
            f"expected Content-Encoding gzip or deflate (or none), got {encoding.decode('latin-1')!r}"
        )
    inflate = zlib.decompressobj(wbits)
    try:
        out = inflate.decompress(body, limit + 1)  # stops past the limit: no unbounded inflation
    except zlib.error as e:
        raise BadRequest(
            f"expected a {encoding.decode()} body (Content-Encoding), got invalid data: {e}"
        ) from None
    if len(out) > limit:
        raise PayloadTooLarge(f"expected a body of at most {limit} bytes once decompressed, got more")
    if not inflate.eof:
        raise BadRequest(f"expected a {encoding.decode()} body (Content-Encoding), got a truncated one")
    return out
