"""The domain error family.

Services raise these; one handler per HTTP app renders them as
`{"error": code, "detail": ...}` with the status each class carries.
"""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """Base of every error a client is meant to see."""

    status_code = 400
    code = "bad_request"

    def __init__(self, detail: Any = None, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail if detail is not None else self.__class__.__doc__
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        """The JSON body sent for this error."""
        return {"error": self.code, "detail": self.detail}

    def headers(self) -> dict[str, str] | None:
        """Extra response headers for this error (none by default)."""
        return None


class BadRequest(AppError):
    """The request could not be understood."""

    status_code = 400
    code = "bad_request"


class ValidationFailed(AppError):
    """The request body did not match the schema."""

    status_code = 422
    code = "validation_error"


class Unauthorized(AppError):
    """A missing, unknown or revoked API key."""

    status_code = 401
    code = "unauthorized"


class Forbidden(AppError):
    """The key is valid but not allowed here."""

    status_code = 403
    code = "forbidden"


class NotFound(AppError):
    """No such resource in this workspace."""

    status_code = 404
    code = "not_found"


class Conflict(AppError):
    """The change conflicts with existing data."""

    status_code = 409
    code = "conflict"


class PayloadTooLarge(AppError):
    """The request or one of its events is over the size limit."""

    status_code = 413
    code = "payload_too_large"


class TooManyRequests(AppError):
    """Too many requests from this client; wait `Retry-After` seconds."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, detail: Any = None, *, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = max(1, retry_after)

    def headers(self) -> dict[str, str] | None:
        """`Retry-After` in whole seconds."""
        return {"Retry-After": str(self.retry_after)}


class ServiceUnavailable(AppError):
    """A backing service did not answer; retry later."""

    status_code = 503
    code = "unavailable"

    def __init__(self, detail: Any = None, *, code: str | None = None, retry_after: int = 5) -> None:
        super().__init__(detail, code=code)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str] | None:
        """`Retry-After`, so clients back off instead of hammering a service that is down."""
        return {"Retry-After": str(self.retry_after)}
