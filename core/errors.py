"""The error tree of Overcast: every error we raise derives from one base.

::

    OvercastError
    ├── ConfigurationError          settings or a backend URL cannot be used
    ├── NotFoundError               a thing that was asked for does not exist
    │   └── FunctionNotFoundError   an invoker has no function of that name
    ├── InvalidKeyError             a store or blob key is malformed
    ├── InvalidValueError           a value cannot be stored as it is
    │   └── ItemTooLargeError       an item exceeds the store's size limit
    ├── ConditionFailedError        a conditional write found another state
    │   ├── TransactionConflictError  one item of a transaction failed its condition
    │   └── LockLostError           a lease is no longer its key's current one (fenced out)
    ├── LockTimeoutError            a lock stayed held by another holder for the whole wait
    ├── ThrottledError              the backend kept refusing after our retries
    ├── BackendError                a backend failed in a way we do not model
    └── InvocationError             a function invocation did not return a result
        ├── FunctionError           the function raised (its type and message kept)
        ├── InvocationTimeoutError  the function ran past its timeout and was stopped
        └── FunctionCrashedError    the function's process died

Vendor errors are translated in one place per adapter and chained with ``raise … from``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


class OvercastError(Exception):
    """Base of every error Overcast raises."""


class ConfigurationError(OvercastError):
    """Raised when settings or a backend URL cannot be turned into a working backend."""


class NotFoundError(OvercastError):
    """Raised when something that was asked for does not exist.

    Attributes:
        what: the kind of thing (``"blob"``, ``"item"``, ``"function"`` …).
        key: its identifier.
    """

    def __init__(self, what: str, key: str, message: str | None = None) -> None:
        self.what = what
        self.key = key
        super().__init__(message or f"{what} not found: {key!r}")


class FunctionNotFoundError(NotFoundError):
    """Raised by an invoker when no function of that name is registered or deployed."""

    def __init__(self, function: str, message: str | None = None) -> None:
        super().__init__("function", function, message)
        self.function = function


class InvalidKeyError(OvercastError, ValueError):
    """Raised when a store key or blob key is malformed (empty, ``..``, absolute, NUL …).

    Attributes:
        key: the offending key.
        reason: what is wrong with it.
    """

    def __init__(self, key: object, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"invalid key {key!r}: {reason}")


class InvalidValueError(OvercastError, ValueError):
    """Raised when an item or value cannot be stored as it is (unsupported type, bad attribute)."""


class ItemTooLargeError(InvalidValueError):
    """Raised when an item is larger than the key-value store accepts (DynamoDB's 400 KB).

    Large values belong in the blob store, referenced from the item.

    Attributes:
        pk, sk: the item's key.
        size: its encoded size in bytes.
        limit: the limit it exceeded.
    """

    def __init__(self, pk: str, sk: str, size: int, limit: int) -> None:
        self.pk, self.sk, self.size, self.limit = pk, sk, size, limit
        super().__init__(
            f"item ({pk!r}, {sk!r}) is {size} bytes, over the store's limit of {limit} bytes; "
            "store large values in the blob store and keep a reference in the item"
        )


class ConditionFailedError(OvercastError):
    """Raised when a conditional write (``if_absent``, ``if_version``) finds another state.

    Attributes:
        pk, sk: the item's key.
        condition: the condition that failed, in words.
    """

    def __init__(self, pk: str, sk: str, condition: str) -> None:
        self.pk, self.sk, self.condition = pk, sk, condition
        super().__init__(f"condition failed on ({pk!r}, {sk!r}): {condition}")


class TransactionConflictError(ConditionFailedError):
    """Raised when a transaction is cancelled; nothing of it was written.

    Attributes:
        index: position of the operation that failed in the list given to ``transact``
            (``None`` when the backend did not say, e.g. contention with another transaction).
        reason: ``"condition"`` for a failed condition, ``"conflict"`` for contention.
    """

    def __init__(
        self, pk: str, sk: str, condition: str, *, index: int | None, reason: str = "condition"
    ) -> None:
        self.index = index
        self.reason = reason
        super().__init__(pk, sk, condition)
        self.args = (f"transaction cancelled at operation {index} ({pk!r}, {sk!r}): {condition}",)


class LockLostError(ConditionFailedError):
    """Raised when a lease is used after it stopped being its key's current lease.

    That happens when the lease was released, or when it lapsed and another holder took the
    lock over (which gave the key a newer fencing token). Raised by ``Locks.renew``,
    ``Locks.release``, ``Locks.check`` and by a record commit that requires a fencing token.

    Attributes:
        key: the lock's key.
        holder: the holder the lease was issued to (``None`` when only the token was given).
        token: the lease's (stale) fencing token.
    """

    def __init__(self, key: str, holder: str | None, token: int, reason: str) -> None:
        self.key, self.holder, self.token = key, holder, token
        super().__init__(f"TXN#{key}", "LOCK", reason)
        whose = f" of {holder!r}" if holder is not None else ""
        self.args = (f"lock {key!r}: the lease{whose} with fencing token {token} is lost: {reason}",)


class LockTimeoutError(OvercastError):
    """Raised by ``Locks.acquire`` when another holder kept the lock for the whole wait.

    Attributes:
        key: the lock's key.
        holder: the holder that asked for the lock.
        current_holder: the holder that has it.
        expires_at: when the current lease ends unless renewed (epoch seconds).
        waited_s: how long the caller waited.
    """

    def __init__(
        self, key: str, holder: str, current_holder: str, expires_at: float, waited_s: float
    ) -> None:
        self.key, self.holder, self.current_holder = key, holder, current_holder
        self.expires_at, self.waited_s = expires_at, waited_s
        until = datetime.fromtimestamp(expires_at, UTC).isoformat()
        super().__init__(
            f"lock {key!r} is held by {current_holder!r} until {until} unless renewed; "
            f"{holder!r} waited {waited_s:.2f} s"
        )


class ThrottledError(OvercastError):
    """Raised when a backend kept throttling after the adapter's own capped, jittered retries.

    Attributes:
        attempts: how many attempts were made.
    """

    def __init__(self, message: str, *, attempts: int) -> None:
        self.attempts = attempts
        super().__init__(f"{message} (gave up after {attempts} attempts)")


class BackendError(OvercastError):
    """Raised when a backend fails in a way no more specific error describes."""


class InvocationError(OvercastError):
    """Base of the errors an invoker raises when an invocation yields no result.

    Attributes:
        function: the function's name.
    """

    def __init__(self, function: str, message: str) -> None:
        self.function = function
        super().__init__(message)


class FunctionError(InvocationError):
    """Raised when the invoked function raised an exception.

    Attributes:
        error_type: the exception's type name as the function reported it.
        error_message: its message.
        stack_trace: the formatted trace lines, when known.
    """

    def __init__(
        self,
        function: str,
        error_type: str,
        error_message: str,
        stack_trace: list[str] | None = None,
    ) -> None:
        self.error_type = error_type
        self.error_message = error_message
        self.stack_trace = stack_trace or []
        super().__init__(function, f"function {function!r} raised {error_type}: {error_message}")

    def to_payload(self) -> dict[str, Any]:
        """Return the error in Lambda's error payload shape."""
        return {
            "errorType": self.error_type,
            "errorMessage": self.error_message,
            "stackTrace": self.stack_trace,
        }


class InvocationTimeoutError(InvocationError):
    """Raised when the function ran past its timeout and was stopped.

    Attributes:
        timeout_s: the timeout it exceeded, when the backend said (``None`` otherwise).
    """

    def __init__(self, function: str, timeout_s: float | None) -> None:
        self.timeout_s = timeout_s
        after = f" after {timeout_s:.2f} seconds" if timeout_s is not None else ""
        super().__init__(function, f"function {function!r} timed out{after}")


class FunctionCrashedError(InvocationError):
    """Raised when the function's process died before it returned (a crash, a kill, an exit).

    Attributes:
        exit_code: the process's exit code, when known (negative: killed by that signal).
    """

    def __init__(self, function: str, exit_code: int | None, detail: str = "") -> None:
        self.exit_code = exit_code
        text = f"function {function!r} crashed (exit code {exit_code})"
        super().__init__(function, f"{text}: {detail}" if detail else text)
