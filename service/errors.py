"""Errors the service answers with; service/http/errors.py renders each as ``{"error": "<what was expected,
what came in>"}`` with the class's status code.

ServiceError            (status_code on the class)
 ├── BadRequest          400  the body is not what /predict expects
 ├── NotFound            404  no such route or BN layer
 ├── MethodNotAllowed    405
 ├── PayloadTooLarge     413  body or row count over the configured limit
 ├── UnsupportedMediaType 415 not application/json
 ├── Unprocessable       422  well-formed JSON with wrong values (feature count, NaN, names...)
 └── NotReady            503  the artifact is not loaded (or failed verification)
"""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ServiceError):
    status_code = 400


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
