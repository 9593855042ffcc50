from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Query, Request

from models.repository import MODEL_NAME_PATTERN, VERSION_PATTERN
from service.inference.predictor import Predictor
from service.inference.repository import ModelRegistry
from service.settings import Settings

# The patterns are documented, not enforced here: the registry refuses a bad name with a 400 saying why.
ModelQuery = Annotated[
    str | None,
    Query(
        description="the model (default: BNSERVE_DEFAULT_MODEL, else the only or first one)",
        json_schema_extra={"pattern": MODEL_NAME_PATTERN},
    ),
]
VersionQuery = Annotated[
    str | None,
    Query(
        description="the version, a positive integer (default: the highest one serving)",
        json_schema_extra={"pattern": VERSION_PATTERN},
    ),
]


def get_registry(request: Request) -> ModelRegistry[Predictor]:
    registry: ModelRegistry[Predictor] = request.app.state.registry
    return registry


def get_predictor(
    request: Request, model: ModelQuery = None, version: VersionQuery = None
) -> Iterator[Predictor]:
    """Gives the route the version ``?model=&version=`` names, held until the answer is sent: a version
    unloaded meanwhile is closed only after that."""
    with get_registry(request).lease(model, version) as served:
        yield served.value


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


PredictorDep = Annotated[Predictor, Depends(get_predictor)]
RegistryDep = Annotated[ModelRegistry[Predictor], Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
