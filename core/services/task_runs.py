"""Task runs: reported in batches by the client-side engine, upserted idempotently.

The engine decides task-run states itself (that is what makes tasks cost microseconds) and
reports them behind the fact, as JSON documents: the task run as the engine last saw it, plus
the states it went through since its previous report. The server keeps, per task run, one item
holding the newest state (by timestamp) and the history of every state: a replayed batch
changes nothing, and a late batch carrying an older state never overwrites a newer one (a
terminal one included).

The API validates documents with pydantic at its edge (``TaskRunUpdate``); the in-process
client hands over documents the engine built, so the hot path never pays for validation twice.
New task runs (the common case) are inserted up to 100 per transaction: one round trip to
DynamoDB, one SQLite transaction. The states a batch brings are then announced as
``overcast.task-run.<State>`` events (by default the state each task run reached: see
``TaskRuns``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import Any, Literal, NamedTuple

from overcast.core import keys
from overcast.core.errors import ConditionFailedError, NotFoundError, TransactionConflictError
from overcast.core.models import TaskRun
from overcast.core.ports import MAX_TRANSACTION_ITEMS, Item, KeyValueStore, Put
from overcast.core.schemas import Page, TaskRunFilter, TaskRunUpdate, TaskRunUpsert
from overcast.core.services._listing import list_partition
from overcast.core.services._run_events import task_run_events
from overcast.core.services.events import Events
from overcast.core.states import State, utcnow

MAX_ATTEMPTS = 25
MAX_HISTORY = 200
"""States kept per task run (the oldest go first); keeps an item far below the 400 KB limit."""

Document = dict[str, Any]
"""``{"task_run": <TaskRun as JSON>, "states": [<State as JSON>, ...]}``."""
RunEvents = Literal["auto", "all", "final", "off"]
"""Which task-run states are announced as events (see ``TaskRuns``)."""
TASK_RUN_EVENTS = "overcast.task-run."


class Outcome(NamedTuple):
    """What became of one task-run document: ``TaskRunUpsert``'s fields, unvalidated."""

    id: str
    status: Literal["applied", "ignored", "rejected"]
    reason: str | None = None


class TaskRuns:
    """Upserts, reads and lists task runs.

    Args:
        store: the key-value store.
        events: where task runs' states are announced (``overcast.task-run.<State>``).
        run_events: which states are announced: ``auto`` (the default) announces as ``final``
            does while an enabled automation listens for task-run events (``listening``: a
            block that says whether one does, around the announcing), and nothing otherwise, so task runs cost no event writes until something wants them;
            ``final``, the state each task run reached by each report (a short task's Completed, Failed or Cached; a long one
            also its Running, reported while it ran); ``all``, every state (Pending, Running
            … : about three events per task run); ``off``, none.
        clock: the current time (injected for tests).
    """

    def __init__(
        self,
        store: KeyValueStore,
        *,
        events: Events | None = None,
        run_events: RunEvents = "auto",
        listening: Callable[[str], AbstractContextManager[bool]] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._events = events if run_events != "off" else None
        self._every_state = run_events == "all"
        self._listening = listening if run_events == "auto" else None
        self._clock = clock

    def upsert(self, updates: Iterable[TaskRunUpdate]) -> list[TaskRunUpsert]:
        """Apply validated updates (see ``upsert_documents``)."""
        # Unset fields are left out (their defaults fill them in on reading): fewer bytes stored.
        return self.upsert_documents([u.model_dump(mode="json", exclude_none=True) for u in updates])

    def upsert_documents(self, documents: list[Document]) -> list[TaskRunUpsert]:
        """Apply a batch of task-run documents (see ``write_documents``); return what became of each."""
        return [
            TaskRunUpsert(id=outcome.id, status=outcome.status, reason=outcome.reason)  # type: ignore[arg-type]
            for outcome in self.write_documents(documents)
        ]

    def write_documents(self, documents: list[Document]) -> list[Outcome]:
        """Apply a batch of task-run documents; return what became of each, in order.

        A document whose flow run does not exist is ``rejected``; the others are unaffected.
        Documents must be well formed (the API validates them; the engine builds them). The
        outcomes are plain tuples, so an in-process caller pays nothing for what it ignores.

        The states announced (see ``run_events``) are stored as events after the task runs:
        a batch that fails in between is sent again, and its events, whose ids are their
        states' ids, are then stored once.
        """
        results: dict[int, Outcome] = {}
        known_runs: dict[str, Item | None] = {}
        fresh: list[tuple[int, Item]] = []
        announced: dict[int, list[dict[str, Any]]] = {}  # position -> the states to announce
        updated = keys.ts(self._clock())
        for position, document in enumerate(documents):
            task_run = document["task_run"]
            flow_run_id = task_run.get("flow_run_id")
            if flow_run_id is not None:
                if flow_run_id not in known_runs:
                    known_runs[flow_run_id] = self._store.get(*keys.flow_run(uuid.UUID(flow_run_id)))
                if known_runs[flow_run_id] is None:
                    reason = f"flow run {flow_run_id} does not exist"
                    results[position] = Outcome(task_run["id"], "rejected", reason)
                    continue
            fresh.append((position, _item(_new(document, updated))))
        # Try every task run as new, a transaction at a time; one that exists fails its
        # transaction, whose members then go one by one through the compare-and-merge path.
        for start in range(0, len(fresh), MAX_TRANSACTION_ITEMS):
            chunk = fresh[start : start + MAX_TRANSACTION_ITEMS]
            ids = {item["pk"] for _, item in chunk}
            try:
                if len(ids) < len(chunk):
                    raise TransactionConflictError("-", "-", "one task run twice in a batch", index=None)
                self._store.transact([Put(item, if_absent=True) for _, item in chunk])
            except TransactionConflictError:
                for position, _ in chunk:
                    results[position], announced[position] = self._upsert_one(documents[position])
                continue
            for position, item in chunk:
                results[position] = Outcome(item["task_run"]["id"], "applied")
        if self._events is not None:
            with self._listening(TASK_RUN_EVENTS) if self._listening else nullcontext(True) as listened:
                if listened:
                    self._announce(documents, results, announced, known_runs)
        return [results[position] for position in range(len(documents))]

    def _announce(
        self,
        documents: list[Document],
        results: dict[int, Outcome],
        new_states: dict[int, list[dict[str, Any]]],
        flow_runs: dict[str, Item | None],
    ) -> None:
        """Store the events of the states the batch brought: per document, its newest state
        (``final``), or (``all``) the states it added to a stored task run (``new_states``),
        else all of its states (a new task run, or a replay whose events may have been lost;
        events stored before are not stored again)."""
        assert self._events is not None
        events: list[dict[str, Any]] = []
        for position, document in enumerate(documents):
            if results[position].status == "rejected":
                continue
            task_run = document["task_run"]
            if self._every_state:
                states = new_states.get(position) or document.get("states") or [task_run["state"]]
            else:
                states = [task_run["state"]]
            flow_run_id = task_run.get("flow_run_id")
            flow_run = flow_runs.get(flow_run_id) if flow_run_id is not None else None
            events += task_run_events(
                document, flow_run["run"] if flow_run else None, states, chain=self._every_state
            )
        self._events.emit_documents(events)

    def get(self, task_run_id: uuid.UUID) -> TaskRun:
        """Return the task run. Raises ``NotFoundError`` when there is none."""
        return _task_run(self._read(task_run_id))

    def states(self, task_run_id: uuid.UUID) -> list[State]:
        """Return the task run's state history, oldest first. Raises ``NotFoundError`` for an unknown one."""
        return [State.model_validate(s) for s in self._read(task_run_id)["history"]]

    def filter(self, query: TaskRunFilter) -> Page[TaskRun]:
        """List the task runs of one flow run (or of none), oldest first."""
        items, cursor = list_partition(
            self._store,
            keys.task_runs_of(query.flow_run_id),
            index="gsi2",
            sort_attr="gsi2sk",
            cursor=query.cursor,
            limit=query.limit,
        )
        return Page[TaskRun](items=[_task_run(i) for i in items], next_cursor=cursor)

    def _read(self, task_run_id: uuid.UUID) -> Item:
        item = self._store.get(*keys.task_run(task_run_id))
        if item is None:
            raise NotFoundError("task run", str(task_run_id))
        return item

    def _upsert_one(self, document: Document) -> tuple[Outcome, list[dict[str, Any]]]:
        """Insert or merge one task run; return the outcome and the states it added to the stored
        one (none when it inserted the task run, or changed nothing)."""
        task_run_id = document["task_run"]["id"]
        for _ in range(MAX_ATTEMPTS):
            item = self._store.get(*keys.task_run(task_run_id))
            updated = keys.ts(self._clock())
            try:
                if item is None:
                    self._store.put(_item(_new(document, updated)), if_absent=True)
                    return Outcome(task_run_id, "applied"), []
                merged = _merged(item, document, updated)
                if merged is None:
                    return Outcome(task_run_id, "ignored", "not newer than the stored state"), []
                stored, added = merged
                self._store.put(_item(stored), if_version=int(item["v"]))
                return Outcome(task_run_id, "applied"), added
            except ConditionFailedError:
                continue  # another batch wrote it first: compare again
        return Outcome(task_run_id, "rejected", "the task run kept changing; retry"), []


def _order(state: dict[str, Any]) -> tuple[datetime, bool, str]:
    # Newest wins; at the same instant a terminal state wins; then the id breaks the tie.
    when = datetime.fromisoformat(state["timestamp"])
    return (when, state["type"] in _TERMINAL, state["id"])


_TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})


def _task_run(item: Item) -> TaskRun:
    # The stored task run leaves out its state: it is the newest entry of the history.
    return TaskRun.model_validate({**item["task_run"], "state": item["history"][-1]})


def _states(document: Document) -> dict[str, dict[str, Any]]:
    incoming = document["task_run"]
    states = {s["id"]: s for s in document.get("states", ())}
    states[incoming["state"]["id"]] = incoming["state"]
    return states


def _in_order(states: list[dict[str, Any]], latest: dict[str, Any]) -> bool:
    """Say whether ``states`` is already the history: ending in ``latest``, timestamps rising.

    Only timestamps in ``keys.ts()``'s form are compared as text (what the engine sends); any
    other form says no, and the caller sorts.
    """
    if not states or states[-1]["id"] != latest["id"]:
        return False
    previous = ""
    for state in states:
        stamp = state["timestamp"]
        if len(stamp) != 27 or stamp[-1] != "Z" or stamp <= previous:
            return False
        previous = stamp
    return True


def _new(document: Document, updated: str) -> dict[str, Any]:
    """The stored form of a task run seen for the first time."""
    task_run = document["task_run"]
    states = document.get("states") or []
    if _in_order(states, task_run["state"]):
        history = states[-MAX_HISTORY:]
    else:
        history = sorted(_states(document).values(), key=_order)[-MAX_HISTORY:]
    return {"task_run": _without_state(task_run, updated), "history": history}


def _merged(
    item: Item, document: Document, updated: str
) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The stored form after applying ``document`` to ``item``, and the states it adds;
    ``None`` when nothing changes."""
    incoming = document["task_run"]
    states = _states(document)
    newest = max(states.values(), key=_order)
    current = item["task_run"]
    known = {s["id"] for s in item["history"]}
    added = [s for s in states.values() if s["id"] not in known]
    newer = _order(newest) > _order(item["history"][-1])
    if not newer and not added:
        return None
    history = sorted([*item["history"], *added], key=_order)[-MAX_HISTORY:]
    task_run = current
    if newer:
        task_run = {
            **incoming,
            "created": current["created"],
            "start_time": current.get("start_time") or incoming.get("start_time"),
            "run_count": max(current.get("run_count", 0), incoming.get("run_count", 0)),
        }
    return {"task_run": _without_state(task_run, updated), "history": history}, added


def _without_state(task_run: dict[str, Any], updated: str) -> dict[str, Any]:
    # The stored task run leaves out its state: it is the newest entry of the history.
    stored = {k: v for k, v in task_run.items() if k != "state"}
    stored["updated"] = updated
    return stored


def _item(stored: dict[str, Any]) -> Item:
    task_run = stored["task_run"]
    task_run_id = task_run["id"]
    pk, sk = keys.task_run(task_run_id)
    return {
        "pk": pk,
        "sk": sk,
        "gsi2pk": keys.task_runs_of(task_run.get("flow_run_id"), keys.shard_of(task_run_id)),
        "gsi2sk": keys.task_run_sort(task_run["created"], task_run_id),
        **stored,
    }
