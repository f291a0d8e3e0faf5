"""What can go wrong, twice: per attempt (``RpcFailure``, internal, drives retries) and per call
(the ``TesseraError`` family, what callers catch once the client has given up).

Retryable conditions (routing errors, busy, unavailable nodes, attempt timeouts) never reach
the caller as such: the client retries them until the call's deadline, then raises
``DeadlineExceeded`` naming the last problem. Only bad input and errors the client does not
understand are raised straight away.
"""

from __future__ import annotations

import grpc

from common.wire import errors as wire_errors
from tesserapb import errors_pb2, kv_pb2

_CODE_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}


def status_code(value: int) -> grpc.StatusCode:
    """The StatusCode for a numeric code (as carried by StreamResponseItem.code)."""
    return _CODE_BY_VALUE.get(value, grpc.StatusCode.UNKNOWN)


# -- per call: what callers see ----------------------------------------------------------


class TesseraError(Exception):
    """Base of every error the client library raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgumentError(TesseraError):
    """The request broke a limit or was malformed (INVALID_ARGUMENT). Never retried.

    ``field`` names the offending request field ("key", "value", "limit"...), ``limit`` is the
    limit that was exceeded (0 when the error is not about a limit).
    """

    def __init__(self, field: str, limit: int, message: str) -> None:
        text = message if not field or message.startswith(field) else f"{field}: {message}"
        super().__init__(text + (f" (limit {limit})" if limit else ""))
        self.field = field
        self.limit = limit
        self.detail = message


class CrossPartitionBatchError(InvalidArgumentError):
    """A batch's keys belong to more than one partition; a batch is atomic only within one."""


class DeadlineExceeded(TesseraError, TimeoutError):
    """The call did not complete within its deadline, retries included.

    For a write this means the outcome is UNKNOWN: an attempt may have been applied and only
    its answer lost. Retrying the same logical write is safe only if it is idempotent (a put
    of the same value, a delete); the client's own retries within one call are deduplicated
    by the call's request id, retries across calls are not. ``last_error`` describes the last
    problem seen, ``sent`` says whether any attempt reached a node.
    """

    def __init__(self, message: str, *, last_error: str = "", sent: bool = False) -> None:
        super().__init__(message)
        self.last_error = last_error
        self.sent = sent


class RouterUnavailableError(DeadlineExceeded):
    """The deadline passed without the client learning where the key lives: the router was
    unreachable (``unreachable``) or had no partition for the key (e.g. the cluster is not
    bootstrapped yet)."""

    def __init__(self, message: str, *, last_error: str = "", unreachable: bool = True) -> None:
        super().__init__(message, last_error=last_error, sent=False)
        self.unreachable = unreachable


class ServerError(TesseraError):
    """A failure the client does not know how to retry (INTERNAL, UNIMPLEMENTED, UNKNOWN...).
    For a write the outcome is unknown."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class AccessDeniedError(ServerError):
    """The cluster refused the call's credentials (docs/auth.md): UNAUTHENTICATED (no token,
    a malformed, unknown or revoked one) or PERMISSION_DENIED (the token's role is too low).
    Never retried; nothing was changed."""


class ClientClosedError(TesseraError):
    """The client was closed."""


# -- per attempt: what transports raise --------------------------------------------------


class RpcFailure(Exception):
    """One attempt failed. ``source`` is "node" (a KV call to a store), "router" (a Meta
    call, or no route) or "stream" (the node's multiplexed stream broke: retry elsewhere).
    ``error`` is the structured tessera.v1.Error when the server attached one."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        error: errors_pb2.Error | None = None,
        address: str = "",
        source: str = "node",
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.error = error
        self.address = address
        self.source = source

    @property
    def kind(self) -> str | None:
        """The tessera.v1.Error kind ("not_leader", ...), None without a detail."""
        return self.error.WhichOneof("kind") if self.error is not None else None

    def describe(self) -> str:
        where = f" from {self.source} {self.address}" if self.address else ""
        return f"{self.code.name}{where}: {self.message}"


def failure_from_rpc_error(exc: grpc.RpcError, address: str, source: str = "node") -> RpcFailure:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return RpcFailure(
        code or grpc.StatusCode.UNKNOWN,
        details or "",
        error=wire_errors.error_from_rpc(exc),
        address=address,
        source=source,
    )


def failure_from_stream_item(item: kv_pb2.StreamResponseItem, address: str) -> RpcFailure:
    """A failed StreamResponseItem, mapped exactly like the equivalent unary failure."""
    error = item.error if item.WhichOneof("response") == "error" else None
    return RpcFailure(status_code(item.code), item.message, error=error, address=address, source="node")


def invalid_argument_from(failure: RpcFailure) -> InvalidArgumentError:
    error = failure.error
    if error is not None and error.WhichOneof("kind") == "invalid_argument":
        ia = error.invalid_argument
        return InvalidArgumentError(ia.field, ia.limit, ia.message or failure.message)
    return InvalidArgumentError("", 0, failure.message)
