"""The domain error family.

Services raise these; one handler per HTTP app renders them as
`{"error": code, "detail": ...}` with the status each class carries.

`as_outage()` is the one place that decides whether an exception means a
backing service (PostgreSQL, Redis, Temporal) could not be reached; both
apps answer those with 503 and `Retry-After` instead of 500.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

import asyncpg
import redis.exceptions
import sqlalchemy.exc
from temporalio.service import RPCError, RPCStatusCode

RETRY_AFTER_SECONDS = 5
"""What a 503 asks clients to wait: long enough for a restart or failover
to make progress, short enough that a blip costs little."""


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

    def headers(self) -> dict[str, str]:
        """Extra response headers for this error."""
        return {}


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

    def __init__(
        self, detail: Any = None, *, code: str | None = None, retry_after: int = RETRY_AFTER_SECONDS
    ) -> None:
        super().__init__(detail, code=code)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        """`Retry-After`, so clients and proxies back off instead of hammering."""
        return {"Retry-After": str(self.retry_after)}


# -- outages of backing services --------------------------------------------------

# Socket errors that mean "the other side is not there (now)". A bare OSError
# with no errno is what asyncio raises when every address of a host refused.
_NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EADDRNOTAVAIL,
    }
)

_POSTGRES_OUTAGES: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08, ConnectionDoesNotExistError
    asyncpg.CannotConnectNowError,  # starting up / in recovery
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    sqlalchemy.exc.TimeoutError,  # no pooled connection within pool_timeout
)

_REDIS_OUTAGES = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

_TEMPORAL_OUTAGES = frozenset({RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED})

OUTAGE_TYPES: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    sqlalchemy.exc.SQLAlchemyError,
    redis.exceptions.RedisError,
    RPCError,
)
"""The exception types `as_outage` may say yes to (for registering handlers)."""


def _service_down(exc: BaseException) -> str | None:
    """Which service `exc` itself says is unreachable, if any."""
    if isinstance(exc, _POSTGRES_OUTAGES):
        return "PostgreSQL"
    # asyncpg's InterfaceError also means misuse ("another operation is in
    # progress"): only a closed connection or pool is an outage.
    if type(exc) is asyncpg.InterfaceError and ("closed" in str(exc) or "closing" in str(exc)):
        return "PostgreSQL"
    # SQLAlchemy marks the errors it recognises as disconnects; its other
    # OperationalError / InterfaceError are judged by the driver error they
    # wrap (`orig` and its cause, walked by `as_outage`).
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return "PostgreSQL"
    if isinstance(exc, _REDIS_OUTAGES):
        return "Redis"
    if isinstance(exc, RPCError) and exc.status in _TEMPORAL_OUTAGES:
        return "Temporal"
    if isinstance(exc, ConnectionError | TimeoutError | socket.gaierror):
        return "a backing service"
    if type(exc) is OSError and (exc.errno is None or exc.errno in _NETWORK_ERRNOS):
        return "a backing service"
    return None


def as_outage(exc: BaseException) -> ServiceUnavailable | None:
    """A ServiceUnavailable when `exc`, or an exception it was raised from or
    wraps, means PostgreSQL, Redis or Temporal could not be reached; None for
    anything else (a bug stays a 500)."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen or len(seen) > 16:
            continue
        seen.add(id(current))
        if isinstance(current, ServiceUnavailable):
            return current
        service = _service_down(current)
        if service is not None:
            return ServiceUnavailable(f"{service} is unavailable; retry later")
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        orig = getattr(current, "orig", None)  # SQLAlchemy's wrapped driver error
        # `raise ... from None` says the earlier error is not the cause.
        context = None if current.__suppress_context__ else current.__context__
        for nested in (orig, current.__cause__, context):
            if isinstance(nested, BaseException):
                pending.append(nested)
    return None
