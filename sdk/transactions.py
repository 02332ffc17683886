"""Transactions: tasks grouped so that their side effects roll back together and committed work stays done.

``with transaction(key=…):`` opens a transaction. Every task run inside opens its own child
transaction keyed by its cache key: on success the task *stages* its result there, and the
record is written when the transaction commits — at once (``EAGER``), or with the outermost
transaction (``LAZY``, the default inside a user's transaction). If the block raises, nothing
staged is written and the ``on_rollback`` hooks of the tasks that had succeeded run, newest
first; on success the ``on_commit`` hooks run, oldest first. A task whose record is already
committed does not run again: it returns the recorded result (state ``Cached``).

``SERIALIZABLE`` isolation takes the key's lock in the control plane's store before the
transaction reads its record: a leased lock with a fencing token, renewed while the block runs,
released on exit, and taken over by the next waiter if this process dies (after the lease). Its
record commit is fenced by the token, so a holder that lost its lock cannot commit. Two
processes racing one key thus run the body once; the second sees the first's record
(``txn.is_committed()``, ``txn.read()``).

    with transaction(key="daily-load", isolation_level=IsolationLevel.SERIALIZABLE) as txn:
        if not txn.is_committed():
            rows = extract()
            txn.stage(load(rows))
    value = txn.read()
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Any

from overcast._options import call_hook
from overcast._renewer import Renewer
from overcast.core.errors import OvercastError

if TYPE_CHECKING:
    from overcast._runtime import Runtime
    from overcast.core.services.locks import Lease
    from overcast.core.services.records import TransactionRecord
    from overcast.results import ResultStore

logger = logging.getLogger("overcast.transactions")

DEFAULT_LEASE_S = 60.0
"""A SERIALIZABLE transaction's lock lease; renewed every third of it while the block runs."""


class IsolationLevel(enum.StrEnum):
    """How a transaction sees concurrent ones with its key."""

    READ_COMMITTED = "READ_COMMITTED"
    """Read the record as committed when the transaction starts; take no lock (the default)."""
    SERIALIZABLE = "SERIALIZABLE"
    """Hold the key's lock from start to end: one transaction per key at a time."""


class CommitMode(enum.StrEnum):
    """When a transaction's staged record is written."""

    EAGER = "EAGER"
    """As soon as the transaction ends without error."""
    LAZY = "LAZY"
    """When the outermost transaction commits (the default for a nested one)."""
    OFF = "OFF"
    """Never: the transaction runs its hooks but writes no record."""


class TransactionState(enum.StrEnum):
    """Where a transaction is in its life."""

    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    STAGED = "STAGED"
    COMMITTED = "COMMITTED"
    ROLLED_BACK = "ROLLED_BACK"


class TransactionError(OvercastError):
    """A transaction was used in a way it cannot be (read without a record, stage twice …)."""


Hook = Callable[["Transaction"], Any]

_MISSING: Any = object()

_current: ContextVar[Transaction | None] = ContextVar("overcast_transaction", default=None)
current_transaction = _current  # for the engine: one ContextVar read per task run


def get_transaction() -> Transaction | None:
    """The innermost open transaction, or ``None``."""
    return _current.get()


class Transaction:
    """One transaction; see the module's docstring. Build it with ``transaction()``.

    Attributes:
        key: the record's key (``None``: a transaction that only groups others).
        isolation_level: READ_COMMITTED or SERIALIZABLE.
        commit_mode: EAGER, LAZY or OFF.
        state: where it is in its life.
        parent: the enclosing transaction, if any.
    """

    def __init__(
        self,
        key: str | None,
        *,
        isolation_level: IsolationLevel,
        commit_mode: CommitMode,
        overwrite: bool,
        expires_at: datetime | None,
        store: ResultStore | None,
        runtime: Runtime,
        parent: Transaction | None,
    ) -> None:
        self.key = key
        self.isolation_level = isolation_level
        self.commit_mode = commit_mode
        self.overwrite = overwrite
        self.expires_at = expires_at
        self.state = TransactionState.PENDING
        self.parent = parent
        self.store = store
        self._runtime = runtime
        self._record: TransactionRecord | None = None
        self._staged: dict[str, Any] | None = None
        self._value: Any = _MISSING
        self._values: dict[str, Any] = {}
        self._children: list[Transaction] = []
        self._on_commit: list[Hook] = []
        self._on_rollback: list[Hook] = []
        self._lease: Lease | None = None
        self._renewer: Renewer | None = None
        self._token: Any = None

    # -- what users call ------------------------------------------------------------------------

    @property
    def record(self) -> TransactionRecord | None:
        """The key's committed record, if any."""
        return self._record

    def is_committed(self) -> bool:
        """Say whether a record of this key was committed (before this transaction, or by it)."""
        return self._record is not None or self.state is TransactionState.COMMITTED

    def read(self) -> Any:
        """The committed value of this key: the record's result, loaded from its storage.

        Raises:
            TransactionError: there is no record (nothing was committed under the key).
        """
        if self._value is not _MISSING:
            return self._value
        if self._record is None:
            raise TransactionError(f"no record is committed under key {self.key!r}")
        from overcast.results import load_result

        self._value = load_result(self._record.data)
        return self._value

    def stage(
        self,
        value: Any,
        *,
        on_commit: list[Hook] | None = None,
        on_rollback: list[Hook] | None = None,
        reference: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Hold ``value`` for this key's record until the transaction commits; return its reference.

        Args:
            value: what the record stands for; persisted through the transaction's result
                store unless ``reference`` (an already persisted result) is given.
            on_commit: hooks run (with this transaction) once it commits.
            on_rollback: hooks run (with this transaction) if it rolls back.
            reference: the persisted result to record instead of persisting ``value``.

        Returns:
            The persisted result's reference (``None`` when the transaction keeps no record).
        """
        if self.key is not None and self.commit_mode is not CommitMode.OFF:
            if reference is None:
                from overcast.results import ResultStore

                store = self.store or ResultStore(self._runtime.settings.blobs_url)
                reference = store.persist(self.key, value)
            self._staged = reference
        self._value = value
        self._on_commit.extend(on_commit or ())
        self._on_rollback.extend(on_rollback or ())
        self.state = TransactionState.STAGED
        return reference

    def set(self, name: str, value: Any) -> None:
        """Share a value with this transaction's hooks and nested transactions."""
        self._values[name] = value

    def get(self, name: str, default: Any = _MISSING) -> Any:
        """A value set on this transaction or an enclosing one.

        Raises:
            KeyError: the name was never set and no default was given.
        """
        txn: Transaction | None = self
        while txn is not None:
            if name in txn._values:
                return txn._values[name]
            txn = txn.parent
        if default is _MISSING:
            raise KeyError(f"{name!r} was not set on this transaction or an enclosing one")
        return default

    # -- life -----------------------------------------------------------------------------------

    def begin(self) -> None:
        """Take the lock (SERIALIZABLE) and read the key's record."""
        client = self._runtime.client
        if self.key is not None and self.isolation_level is IsolationLevel.SERIALIZABLE:
            held = self._held_by_ancestor()
            if held is None:
                self._lease = client.acquire_lock(self.key, _holder(), DEFAULT_LEASE_S, wait_s=None)
                lease = self._lease
                self._renewer = Renewer(
                    lambda: client.renew_lock(lease),  # key, holder and token stay: only the expiry moves
                    lease.lease_s / 3,
                    f"the lock on {lease.key!r}",
                    name="overcast-lease",
                )
        if self.key is not None and not self.overwrite:
            records = self._runtime.records
            # SERIALIZABLE reads the store itself: the lock orders it after other processes' commits.
            cached = records.get(self.key) if self._lease is None else None
            if cached is not None:
                self._record = cached
            else:
                self._record = client.read_record(self.key)
                if self._record is not None:
                    records.put(self._record)
        self.state = TransactionState.ACTIVE
        if self.parent is not None:
            self.parent._children.append(self)

    def commit(self) -> None:
        """Write the staged record (unless LAZY inside another) and run the commit hooks."""
        if self.parent is not None and self.commit_mode is CommitMode.LAZY:
            return  # the outermost transaction commits it with itself
        self._commit_tree()

    def _commit_tree(self) -> None:
        for child in self._children:
            if child.state is TransactionState.STAGED or child.state is TransactionState.ACTIVE:
                child._commit_tree()
        if self._staged is not None and self.key is not None and self.commit_mode is not CommitMode.OFF:
            lease = self._lease or self._held_by_ancestor()
            result = self._runtime.client.commit_record(
                self.key,
                self._staged,
                expires_at=self.expires_at,
                overwrite=self.overwrite,
                fencing_token=lease.token if lease is not None else None,
            )
            self._record = result.record
            self._runtime.records.put(result.record)
        self.state = TransactionState.COMMITTED
        for hook in self._on_commit:
            _run_hook(hook, self, "on_commit")

    def rollback(self) -> None:
        """Discard what was staged and run rollback hooks, nested transactions' first, newest first."""
        if self.state in (TransactionState.COMMITTED, TransactionState.ROLLED_BACK):
            return
        for child in reversed(self._children):
            child.rollback()
        self._staged = None
        self.state = TransactionState.ROLLED_BACK
        for hook in reversed(self._on_rollback):
            _run_hook(hook, self, "on_rollback")

    def end(self) -> None:
        """Release the lock, if this transaction took one."""
        if self._renewer is not None:
            self._renewer.stop()
        if self._lease is not None:
            try:
                self._runtime.client.release_lock(self._lease)
            except OvercastError:
                logger.warning(
                    "could not release the lock on %r (its lease will lapse)", self.key, exc_info=True
                )
            self._lease = None

    def _held_by_ancestor(self) -> Lease | None:
        txn = self.parent
        while txn is not None:
            if txn.key == self.key and txn._lease is not None:
                return txn._lease
            txn = txn.parent
        return None

    def __enter__(self) -> Transaction:
        self.begin()
        self._token = _current.set(self)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: Any) -> None:
        _current.reset(self._token)
        if error is not None:
            self.rollback()
            self.end()
            return
        try:
            self.commit()
        except BaseException:
            self.rollback()
            raise
        finally:
            self.end()

    def __repr__(self) -> str:
        return f"Transaction(key={self.key!r}, state={self.state.value})"


def transaction(
    key: str | None = None,
    *,
    isolation_level: IsolationLevel | str | None = None,
    commit_mode: CommitMode | str | None = None,
    overwrite: bool = False,
    expires_at: datetime | None = None,
    store: ResultStore | None = None,
) -> Transaction:
    """A transaction for a ``with`` block: committed if the block succeeds, rolled back if it raises.

    Args:
        key: the record's key; ``None`` groups tasks without a record of its own.
        isolation_level: READ_COMMITTED (default) or SERIALIZABLE (hold the key's lock).
        commit_mode: EAGER, LAZY or OFF; default LAZY inside another transaction, else EAGER.
        overwrite: ignore an existing record and replace it on commit.
        expires_at: when the record stops counting.
        store: where staged values are persisted (default: the settings' blob store).
    """
    from overcast._runtime import get_runtime
    from overcast.context import flow_run_context

    parent = _current.get()
    flow_ctx = flow_run_context.get()
    runtime = flow_ctx.runtime if flow_ctx is not None else get_runtime()
    mode = CommitMode(commit_mode) if commit_mode else (CommitMode.LAZY if parent else CommitMode.EAGER)
    return Transaction(
        key,
        isolation_level=IsolationLevel(isolation_level) if isolation_level else IsolationLevel.READ_COMMITTED,
        commit_mode=mode,
        overwrite=overwrite,
        expires_at=expires_at,
        store=store if store is not None else (parent.store if parent else None),
        runtime=runtime,
        parent=parent,
    )


def _run_hook(hook: Hook, txn: Transaction, kind: str) -> None:
    try:
        call_hook(hook, txn)  # an async hook runs to completion
    except Exception:
        logger.exception(
            "%s hook %s of transaction %r raised", kind, getattr(hook, "__name__", hook), txn.key
        )


def _holder() -> str:
    """Who asks for a lock: this process and thread, plus a random part (unique per transaction)."""
    return f"{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:12]}"
