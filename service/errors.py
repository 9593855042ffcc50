"""Errors the service answers with; service/http/errors.py renders each as ``{"error": "<what was expected,
what came in>"}`` with the class's status code.

ServiceError            (status_code on the class)
 ├── BadRequest          400  the body is not what /predict expects; a malformed model or version name
 ├── Unauthorized        401  a missing or wrong bearer token (with WWW-Authenticate)
 ├── Forbidden           403  an admin endpoint while no admin token is configured
 ├── NotFound            404  no such route, BN layer, model or version
 ├── MethodNotAllowed    405
 ├── PayloadTooLarge     413  body or row count over the configured limit
 ├── UnsupportedMediaType 415 not application/json
 ├── Unprocessable       422  well-formed JSON with wrong values (feature count, NaN, names...)
 └── NotReady            503  the artifact is not loaded (or failed verification)
"""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 500
    headers: dict[str, str] | None = None  # sent with the answer

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ServiceError):
    status_code = 400


class Unauthorized(ServiceError):
    status_code = 401
    headers = {"WWW-Authenticate": 'Bearer realm="bnserve"'}  # noqa: RUF012 (never mutated)


class Forbidden(ServiceError):
    status_code = 403


class NotFound(ServiceError):
    status_code = 404


class MethodNotAllowed(ServiceError):
    status_code = 405


class PayloadTooLarge(ServiceError):
    status_code = 413


class UnsupportedMediaType(ServiceError):
    status_code = 415


class Unprocessable(ServiceError):
    status_code = 422


class NotReady(ServiceError):
    status_code = 503
