"""Bearer tokens: ``BNSERVE_ADMIN_TOKEN`` for what changes server state, ``BNSERVE_READ_TOKEN`` (optional)
for inference and the read-only views.

    @router.post("/drift/reset", dependencies=[AdminOnly])   # 403 unless a token is configured, then 401
    app.include_router(router, dependencies=[ReadersOnly])    # open unless BNSERVE_READ_TOKEN is set
    check_reader(settings, authorization)                     # the same, where there is no Request (the hot path)

Tokens are compared with ``hmac.compare_digest``, whose time does not depend on where they differ. An
empty token setting counts as none: an admin endpoint is never open to an empty ``Authorization``.
"""

from __future__ import annotations

import hmac

from fastapi import Depends, Request
from pydantic import SecretStr

from service.errors import Forbidden, Unauthorized
from service.http.schemas import errors
from service.settings import Settings

ADMIN_DISABLED = (
    "this endpoint changes server state and is disabled because no admin token is configured: set "
    "BNSERVE_ADMIN_TOKEN to a secret and send it as 'Authorization: Bearer <token>'"
)
AUTH_ERRORS = errors(401)
VIEW_ERRORS = errors(400, 401, 404)  # a view of one model version: a malformed or unknown ?model=&version=
ADMIN_ERRORS = errors(401, 403)


def check_admin(settings: Settings, authorization: str | None) -> None:
    """Raises ``Forbidden`` when no admin token is configured, ``Unauthorized`` unless ``authorization``
    carries it."""
    if not _configured(settings.admin_token):
        raise Forbidden(ADMIN_DISABLED)
    _check(authorization, [settings.admin_token], "BNSERVE_ADMIN_TOKEN")


def check_reader(settings: Settings, authorization: str | None) -> None:
    """Raises ``Unauthorized`` when a read token is configured and ``authorization`` carries neither it nor
    the admin token."""
    if _configured(settings.read_token):
        _check(authorization, [settings.read_token, settings.admin_token], "BNSERVE_READ_TOKEN")


def _configured(token: SecretStr | None) -> bool:
    return token is not None and bool(token.get_secret_value())


def _check(authorization: str | None, tokens: list[SecretStr | None], setting: str) -> None:
    expected = f"expected 'Authorization: Bearer <the {setting} token>'"
    if not authorization:
        raise Unauthorized(f"{expected}, got no Authorization header")
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthorized(f"{expected}, got the scheme {scheme[:20]!r}")
    presented = presented.strip()
    if not presented:
        raise Unauthorized(f"{expected}, got an empty token")
    given = presented.encode()
    # Every configured token is compared, so the time taken does not say which one nearly matched.
    matches = [hmac.compare_digest(given, t.get_secret_value().encode()) for t in tokens if t is not None]
    if not any(matches):
        raise Unauthorized(f"{expected}, got a token that is not it")


def require_admin(request: Request) -> None:
    check_admin(request.app.state.settings, request.headers.get("authorization"))


def require_reader(request: Request) -> None:
    check_reader(request.app.state.settings, request.headers.get("authorization"))


AdminOnly = Depends(require_admin)
ReadersOnly = Depends(require_reader)
