"""The engine's own record of a task run: cheap to update on the hot path, JSON on demand.

A task run goes through three or more states in microseconds; building a pydantic model per
state would cost more than the rest of the engine together. So the engine appends plain
entries here and the reporter turns a record into a JSON document in its background thread.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from overcast._ids import id_text, new_id_int
from overcast.core.keys import ts_us
from overcast.core.states import State, StateType

TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})


def _now_us() -> int:
    return time.time_ns() // 1000


class TaskRunRecord:
    """A task run as the engine tracks it.

    Attributes:
        id: the task run's id.
        states: entries ``[type, name, epoch microseconds, message, data, state id or None]``,
            oldest first; timestamps strictly increase, so the order survives the trip to the
            server.
    """

    __slots__ = (
        "_id",
        "_int",
        "_text",
        "created",
        "dynamic_key",
        "end_time",
        "flow_run_id",
        "name",
        "queued",
        "run_count",
        "start_time",
        "states",
        "tags",
        "task_key",
    )

    def __init__(
        self, task_key: str, name: str, flow_run_id: uuid.UUID | None, dynamic_key: str, tags: list[str]
    ) -> None:
        self._int = new_id_int()
        self._id: uuid.UUID | None = None
        self._text: str | None = None
        self.queued = False  # in the reporter's buffer, waiting to be sent (see Reporter.task_run)
        self.task_key = task_key
        self.name = name
        self.flow_run_id = flow_run_id
        self.dynamic_key = dynamic_key
        self.tags = tags
        self.states: list[list[Any]] = []
        self.run_count = 0
        self.created = _now_us()
        self.start_time: int | None = None
        self.end_time: int | None = None

    @classmethod
    def resume(
        cls,
        run_id: uuid.UUID,
        task_key: str,
        name: str,
        flow_run_id: uuid.UUID | None,
        dynamic_key: str,
        tags: list[str],
        *,
        created_us: int,
        states: list[list[Any]],
    ) -> TaskRunRecord:
        """The record of an existing task run (its id kept), its history so far ``states``."""
        record = cls(task_key, name, flow_run_id, dynamic_key, tags)
        record._int, record._id, record._text = run_id.int, run_id, None
        record.created = created_us
        record.states = states
        return record

    def add(self, type_: str, name: str, message: str | None = None, data: Any = None) -> None:
        """Enter a state now."""
        states = self.states
        if not states:
            now = self.created  # the first state is entered as the run is created
        else:
            now = _now_us()
            if now <= states[-1][2]:
                now = states[-1][2] + 1  # two states in one microsecond keep their order
        states.append([type_, name, now, message, data, None])
        if type_ == "RUNNING":
            if self.start_time is None:
                self.start_time = now
        elif type_ in TERMINAL:
            self.end_time = now

    @property
    def state_type(self) -> str:
        """The latest state's type."""
        return str(self.states[-1][0]) if self.states else "PENDING"

    def state(self) -> State:
        """The latest state as a ``State`` model (built on demand: hooks, ``return_state``)."""
        return _state_model(self.states[-1], self.state_id(len(self.states) - 1))

    @property
    def id(self) -> uuid.UUID:
        """The task run's id (built on first use: the hot path needs only its text)."""
        if self._id is None:
            self._id = uuid.UUID(int=self._int)
        return self._id

    @property
    def text(self) -> str:
        """The id as text (made once)."""
        if self._text is None:
            self._text = id_text(self._int)
        return self._text

    def state_id(self, index: int) -> str:
        """The id of state ``index``: the run's id with its low 16 bits xored with the position.

        Stable (a resent document repeats it), unique within the run (up to 65,535 states),
        and far cheaper than a random UUID per state on the hot path.
        """
        entry = self.states[index]
        if entry[5] is None:
            entry[5] = _state_id(self.text[:-4], self._int & 0xFFFF, index)
        return str(entry[5])

    def document(self) -> dict[str, Any]:
        """The record as the control plane's task-run document (JSON-ready)."""
        # The reporter's hot path: one pass, each timestamp formatted once.
        prefix, low = self.text[:-4], self._int & 0xFFFF
        start, end = self.start_time, self.end_time
        start_text = end_text = None
        states = []
        for index, entry in enumerate(self.states):
            type_, name, us, message, data, state_id = entry
            if state_id is None:
                state_id = entry[5] = _state_id(prefix, low, index)
            stamp = ts_us(us)
            state = {"id": state_id, "type": type_, "name": name, "timestamp": stamp}
            if message is not None:
                state["message"] = message
            if data is not None:
                state["data"] = data
            states.append(state)
            if us == start:
                start_text = stamp
            if us == end:
                end_text = stamp
        latest = states[-1]
        # Only what is set: defaults fill the rest, and every byte is encoded and stored per task.
        task_run: dict[str, Any] = {
            "id": self.text,
            "task_key": self.task_key,
            "name": self.name,
            "dynamic_key": self.dynamic_key,
            "state": latest,
            "run_count": self.run_count,
            "created": states[0]["timestamp"] if self.states[0][2] == self.created else ts_us(self.created),
            "updated": latest["timestamp"],
        }
        if self.flow_run_id is not None:
            task_run["flow_run_id"] = _text_of(self.flow_run_id)
        if self.tags:
            task_run["tags"] = self.tags
        if start is not None:
            task_run["start_time"] = start_text or ts_us(start)
        if end is not None:
            task_run["end_time"] = end_text or ts_us(end)
        return {"task_run": task_run, "states": states}


_last_text: tuple[uuid.UUID | None, str] = (None, "")


def _text_of(run_id: uuid.UUID) -> str:
    """``str(run_id)``, remembered for the last id: a flow run's task runs all name it."""
    global _last_text  # noqa: PLW0603 - a one-entry cache (one tuple: atomic)
    cached = _last_text
    if cached[0] is not run_id:
        cached = _last_text = (run_id, str(run_id))
    return cached[1]


def _state_id(prefix: str, low: int, index: int) -> str:
    """State ``index``'s id: the run id's text (``prefix``, its last 4 hex digits cut) with its
    low 16 bits (``low``) xored with the position."""
    return f"{prefix}{low ^ ((index + 1) & 0xFFFF):04x}"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _state_model(entry: list[Any], state_id: str) -> State:
    type_, name, us, message, data, _ = entry
    return State(
        id=uuid.UUID(state_id),
        type=StateType(type_),
        name=name,
        timestamp=_EPOCH + timedelta(microseconds=us),
        message=message,
        data=data,
    )
