"""The model repository over HTTP: GET /models (open), and the Open Inference Protocol's model-repository
extension (admin token): POST /v2/repository/index, /v2/repository/models/{model}/load and /unload.

The routes only translate: the registry (service/inference/repository) does the work on its background
thread, and these await it without blocking the event loop. docs/REPOSITORY.md is the reference.
"""

from __future__ import annotations

import asyncio
from itertools import groupby
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ValidationError

from models.repository import MODEL_NAME_PATTERN
from service.errors import BadRequest
from service.http.auth import ADMIN_ERRORS, AdminOnly
from service.http.deps import RegistryDep
from service.http.schemas import (
    ErrorResponse,
    IndexEntry,
    IndexRequest,
    LoadRequest,
    LoadResponse,
    ModelsResponse,
    ModelState,
    VersionState,
)
from service.inference.predictor import Predictor
from service.inference.repository import ModelRegistry, Outcome, VersionStatus, WorkerBoard

router = APIRouter(tags=["repository"])
admin = APIRouter(tags=["repository"], dependencies=[AdminOnly])

CONVERGE_TIMEOUT_S = 30.0  # several workers: how long a load or unload waits for the others to apply it
_ERRORS = {
    **ADMIN_ERRORS,
    400: {"model": ErrorResponse, "description": "a malformed name, or a version that failed to load"},
    404: {"model": ErrorResponse, "description": "no such model or version in the repository"},
}
ModelName = Annotated[
    str,
    Path(
        description="the model's directory name in the repository",
        json_schema_extra={"pattern": MODEL_NAME_PATTERN},
    ),
]


def _optional_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads its (optional) JSON body itself, with the model's
    schema inlined (its ``$defs`` refer to nothing in the OpenAPI document)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        return [inline(v) for v in node] if isinstance(node, list) else node

    return {"requestBody": {"required": False, "content": {"application/json": {"schema": inline(schema)}}}}


@router.get("/models", response_model=ModelsResponse, summary="Every model and version, with its state")
def models(request: Request, registry: RegistryDep) -> ModelsResponse:
    entries = index_of(request, registry)
    return ModelsResponse(
        default=registry.default_model(),
        models=[
            ModelState(
                name=name,
                versions=[
                    VersionState(
                        version=str(s.version),
                        state=s.state,
                        reason=s.reason,
                        artifact_sha256=s.artifact_sha256,
                    )
                    for s in group
                ],
            )
            for name, group in groupby(entries, key=lambda s: s.model)
        ],
    )


@admin.post(
    "/v2/repository/index",
    response_model=list[IndexEntry],
    responses=ADMIN_ERRORS,
    summary="Every model and version in the repository: READY, LOADING or UNAVAILABLE, and why",
    openapi_extra=_optional_body(IndexRequest),
)
async def repository_index(request: Request, registry: RegistryDep) -> list[IndexEntry]:
    body = await _body(request, IndexRequest)
    only_ready = body is not None and body.ready
    return [
        IndexEntry(
            name=s.model,
            version=str(s.version),
            state=s.state,
            reason=s.reason,
            artifact_sha256=s.artifact_sha256,
        )
        for s in index_of(request, registry)
        if s.state == "READY" or not only_ready
    ]


@admin.post(
    "/v2/repository/models/{model:path}/load",
    response_model=LoadResponse,
    responses=_ERRORS,
    summary="(Re)load a model by its version policy, or serve exactly the versions given (a rollback)",
    openapi_extra=_optional_body(LoadRequest),
)
async def load(model: ModelName, request: Request, registry: RegistryDep) -> LoadResponse:
    versions = _versions(await _body(request, LoadRequest))
    outcome = await asyncio.wrap_future(registry.load(model, versions))
    await _converge(request, registry)
    if outcome.refused and (versions is None or set(outcome.refused) & {int(v) for v in versions}):
        problems = "; ".join(f"version {v}: {reason}" for v, reason in sorted(outcome.refused.items()))
        raise BadRequest(
            f"model {outcome.model!r}: {problems}; serving versions {outcome.serving} (unchanged where refused)"
        )
    return _answer(outcome)


@admin.post(
    "/v2/repository/models/{model:path}/unload",
    response_model=LoadResponse,
    responses=_ERRORS,
    summary="Take a model (or one version, parameters.version) out of service until it is loaded again",
    openapi_extra=_optional_body(LoadRequest),
)
async def unload(model: ModelName, request: Request, registry: RegistryDep) -> LoadResponse:
    versions = _versions(await _body(request, LoadRequest))
    if versions is not None and len(versions) != 1:
        raise BadRequest(f"unload takes at most one version (parameters.version), got {versions}")
    outcome = await asyncio.wrap_future(registry.unload(model, versions[0] if versions else None))
    await _converge(request, registry)
    return _answer(outcome)


def index_of(request: Request, registry: ModelRegistry[Predictor]) -> list[VersionStatus]:
    """Gives back this worker's index or, with several workers, the index across all of them."""
    board: WorkerBoard | None = request.app.state.board
    own = registry.index()
    return board.merged(own) if board is not None else own


B = TypeVar("B", bound=BaseModel)
_EXAMPLES: dict[type[BaseModel], str] = {
    IndexRequest: '{"ready": true}',
    LoadRequest: '{"parameters": {"version": "1"}}',
}


async def _body(request: Request, model: type[B]) -> B | None:
    """Gives back the request's JSON body as ``model``, or None when it is empty. Read whatever the
    Content-Type says: tritonclient sends these bodies without one."""
    data = await request.body()
    if not data.strip():
        return None
    try:
        return model.model_validate_json(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in e.errors()[:5]
        )
        raise BadRequest(f"expected an empty body or JSON like {_EXAMPLES[model]}, got: {problems}") from None


def _versions(body: LoadRequest | None) -> list[str] | None:
    if body is None:
        return None
    p = body.parameters
    given = set(p.model_extra or ())
    if "config" in given or any(k.startswith("file:") for k in given):
        raise BadRequest(
            "parameters.config and file: parameters are not supported: bnserve loads a model's versions as they "
            "are in the repository, with the version policy of its config.json (docs/REPOSITORY.md)"
        )
    if p.version is not None and p.versions is not None:
        raise BadRequest("give parameters.version or parameters.versions, not both")
    if p.version is not None:
        return [str(p.version)]
    if p.versions is not None:
        if not p.versions:
            raise BadRequest("parameters.versions is empty: to stop serving a model, unload it")
        return [str(v) for v in p.versions]
    return None


async def _converge(request: Request, registry: ModelRegistry[Predictor]) -> None:
    board: WorkerBoard | None = request.app.state.board
    if board is not None:
        generation = registry.overrides.generation()
        await asyncio.to_thread(board.wait_until_applied, generation, timeout_s=CONVERGE_TIMEOUT_S)


def _answer(outcome: Outcome) -> LoadResponse:
    return LoadResponse(
        model=outcome.model,
        serving=[str(v) for v in outcome.serving],
        refused={str(v): reason for v, reason in outcome.refused.items()},
    )
