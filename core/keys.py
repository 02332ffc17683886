"""Every key Overcast writes to the key-value store: the single-table design, in one place.

==================  ===========================  ==============================  =========================
entity              pk                           sk                              indexes
==================  ===========================  ==============================  =========================
flow                ``FLOW#<id>``                ``META``                        gsi2 ``FLOWS#<s>`` / name
flow run            ``RUN#<id>``                 ``META``                        gsi1 ``RUNSTATE#<type>#<s>`` /
                                                                                 ``<expected start>#<id>``;
                                                                                 gsi2 ``RUNS#<s>`` / same
flow run state      ``RUN#<id>``                 ``STATE#<ts>#<state id>``
flow run lease      ``RUN#<id>``                 ``LEASE``                       (ttl: a day past the lease)
idempotency key     ``RUNKEY#<flow id>#<key>``   ``META``
task run            ``TASKRUN#<id>``             ``META``                        gsi2 ``RUNTASKS#<flow run>`` /
                                                                                 ``<created>#<id>``
log line            ``LOG#<run id>``             ``<ts>#<line id>``              (ttl)
transaction record  ``TXN#<key>``                ``RECORD``                      (ttl: the record's expiry)
transaction lock    ``TXN#<key>``                ``LOCK``                        (ttl: an hour past the lease)
artifact            ``ART#<id>``                 ``META``                        gsi1 ``RUNART#<run id>`` /
                                                                                 ``<created>#<id>``;
                                                                                 gsi2 ``ARTS#<s>`` / same
artifact version    ``ARTKEY#<key>``             ``V#<version, 10 digits>``
variable            ``VAR#<name>``               ``META``                        gsi2 ``VARS#<s>`` / name
deployment          ``DEPLOY#<id>``              ``META``                        gsi2 ``DEPLOYS#<s>`` /
                                                                                 ``<flow name>/<name>``
deployment slots    ``DEPLOY#<id>``              ``SLOTS``
deployment due      ``DEPLOY#<id>``              ``DUE``                         gsi1 ``DUE#<s>`` /
                                                                                 ``<due>#<id>``
deployment's run    ``DEPLOYRUNS#<id>``          ``<expected start>#<run id>``   (while SCHEDULED)
pool's run          ``POOLRUNS#<pool>#<s>``      ``<expected start>#<run id>``   (while SCHEDULED, PENDING or RUNNING)
work pool           ``POOL#<name>``              ``META``                        gsi2 ``POOLS#<s>`` / name
work queue          ``POOL#<pool>``              ``QUEUE#<name>``
worker              ``POOL#<pool>``              ``WORKER#<name>``               (ttl: a day past its heartbeat)
event               ``EVT#<id>``                 ``META``                        gsi1 ``EVTS#<yyyymmdd>#<s>`` /
                                                                                 ``<occurred>#<id>``;
                                                                                 gsi2 ``EVTRES#<resource id>`` /
                                                                                 same; (ttl: retention)
automation          ``AUTO#<id>``                ``META``                        gsi1 ``AUTOOWNER#<owner>`` /
                                                                                 ``<created>#<id>``;
                                                                                 gsi2 ``AUTOS#<s>`` / same
enabled automations ``AUTO#INDEX``               ``ENABLED``
trigger bucket      ``AUTO#<id>``                ``BUCKET#<path>#<key hash>``    gsi1 ``AUTODUE#<s>`` /
                                                                                 ``<end>#<id>#<path>#<hash>``
                                                                                 (proactive, while it runs)
child firings       ``AUTO#<id>``                ``CHILDREN#<path>``
firing              ``AUTO#<id>``                ``FIRING#<firing id>``          gsi1 ``AUTOFIRINGS#<id>`` /
                                                                                 ``<occurred>#<firing id>``; (ttl)
concurrency limit   ``LIMIT#<name>``             ``META``                        gsi2 ``LIMITS#<s>`` / name
concurrency lease   ``LIMITLEASE#<id>``          ``META``                        (ttl: an hour past the lease)
==================  ===========================  ==============================  =========================

A flow run's states are items of the run's own partition, so its history is one query. Task runs
are keyed by their own id (a read by id needs no flow run), listed per flow run through gsi2,
and keep their (short) state history inside their own item: one write per report.
Timestamps in keys are ISO 8601 in UTC with microseconds, so they sort as text.
A transaction key (a cache key) is any text of 1-500 characters, used verbatim after ``TXN#``:
at 4 bytes a character at most, it stays within DynamoDB's 2,048-byte partition key.

An artifact is its own item, keyed by id (a progress update or a read by id is one request), and
listed per run through gsi1 (the flow run, or the task run of a task outside a flow) and in
creation order through gsi2. A keyed artifact is also copied into its key's partition under its
version number: the key's history is one query, its latest version the first item of a descending
one, and a new version is claimed with a conditional put of ``V#<n+1>``, so racing writers get
distinct versions. Variables are keyed by name (names are unique and immutable) and listed by
name through gsi2.

A work pool's queues and workers live in the pool's partition, so one query reads everything a
pool's status is derived from (its settings, its queues, its workers' heartbeats); pools are
listed by name through gsi2. A worker's item expires a day after its last heartbeat, long after
the sweep has reported it offline. Each item keeps the last status reported for it, so a
status change is detected by comparing it with the derived one and recorded by a conditional
write (one event per change).

An event is keyed by its id, so ingest is one conditional put and a repeat changes nothing; it is
listed newest first per day through gsi1 (a query of the last week reads at most eight day
partitions) and per resource through gsi2, and expires through the ttl after the retention
period (7 days by default).

A deployment's id is derived from its flow's name and its own (``deployment_id_for``), so a read
by name is a read by id, and two racing creations of one deployment meet on one item. Its
partition also holds its concurrency slots (the limit, the strategy, and the runs holding a
slot, changed under the item's version in the same transaction as a run's state) and, while it
is active and has an active schedule, its due item: gsi1 ``DUE#<s>`` sorts deployments by when
the scheduler must next look at them, so a tick reads only those that are due. Flow runs of a
deployment, and of a work pool, get index items of their own, written in the same transaction
as the run (a run item's two index slots are taken): ``DEPLOYRUNS#…`` lists a deployment's
scheduled runs (what pausing it deletes), ``POOLRUNS#…`` a pool's scheduled, pending and running runs
in the order they are due (what its workers poll, and what its concurrency limits count). Both are sparse: a run leaves them when it
moves on, so they hold only what is waiting.

An automation's partition holds its state: one *bucket* per event trigger (its path in the
trigger tree, ``""`` the root, ``"0.1"`` a grandchild) and value of its ``for_each`` labels (their
hash), counting events under the item's version (processes ingesting at once retry); the child
firings of a compound or sequence trigger; and its firing records, keyed by the firing's
deterministic id, so that a firing is stored (and acts) once however many evaluations find it,
listed newest first through gsi1 and expiring after a week. A proactive bucket, while its window
runs, is also in gsi1 ``AUTODUE#<s>`` by when the window ends: the tick reads only the windows
that have closed. ``AUTO#INDEX`` / ``ENABLED`` maps each enabled automation to its version: a
process caches the enabled automations and reads this one item per batch of events to know
whether its cache is current. Automations are listed in creation order through gsi2 and per
owner resource (a deployment's triggers) through gsi1.

A global concurrency limit is one item keyed by its name: its settings, the leases holding its
slots (lease id -> slots and the lease's end) and, for a rate limit, its decaying occupancy. An
acquisition reads the items of the limits it names and writes them all back in one transaction
under their versions, with a lease item that records which limits the lease holds slots in (what
a release or a renewal reads first). Every acquirer of a limit writes its one item: a limit is
a hot item by nature, good for the ~1,000 writes/s of one DynamoDB partition (and fewer when
its item is large); limits are listed by name through gsi2.

Hot partitions: a DynamoDB partition takes ~1,000 writes/s, so the partitions every run of a
kind shares (``RUNSTATE#…``, ``RUNS#…``, ``FLOWS#…``, ``ARTS#…``, ``VARS#…``, ``POOLS#…``,
``EVTS#…``, ``DEPLOYS#…``, ``DUE#…``, ``POOLRUNS#…``, ``AUTOS#…``, ``AUTODUE#…``,
``LIMITS#…``) carry a shard suffix ``<s>``. The shard count is a parameter of these functions;
it is 1 today, and readers query every shard.
"""

from __future__ import annotations

import uuid
import zlib
from datetime import UTC, datetime

from overcast.core.errors import InvalidKeyError
from overcast.core.states import StateType

META = "META"
LEASE = "LEASE"
STATE_PREFIX = "STATE#"
SHARDS = 1


def ts(moment: datetime) -> str:
    """A sortable UTC timestamp for keys: ``2026-11-24T23:04:51.123456Z``."""
    # Formatted by hand: strftime's %Y does not pad years below 1000, which would break the order.
    m = moment
    return f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}.{m.microsecond:06d}Z"


_second: tuple[int, str] = (-1, "")  # the last second ts_us formatted, and its text (one tuple: atomic)


def ts_us(epoch_us: int) -> str:
    """``ts()`` of a moment given as integer microseconds since the epoch, in about 0.3 µs.

    The engine stamps every task-run state this way; the text of the second is formatted once
    per second of states.
    """
    global _second  # noqa: PLW0603 - a one-entry cache
    second, micro = divmod(epoch_us, 1_000_000)
    cached = _second
    if cached[0] != second:
        m = datetime.fromtimestamp(second, UTC)
        cached = _second = (
            second,
            f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}",
        )
    return f"{cached[1]}.{micro:06d}Z"


def ts_text(iso: str) -> str:
    """``ts()`` of an ISO 8601 timestamp given as text; text already in ``ts()``'s form passes as is."""
    if len(iso) == 27 and iso[-1] == "Z" and iso[19] == ".":
        return iso
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return ts(moment.astimezone(UTC))


def shard_of(value: str | uuid.UUID, shards: int = SHARDS) -> int:
    """The shard an id falls in: stable across processes (not Python's salted ``hash``)."""
    return zlib.crc32(str(value).encode()) % shards if shards > 1 else 0


# -- flows -------------------------------------------------------------------------------------


def flow(flow_id: uuid.UUID) -> tuple[str, str]:
    """The flow's item."""
    return f"FLOW#{flow_id}", META


def flows_index(shard: int = 0) -> str:
    """gsi2 partition listing flows by name."""
    return f"FLOWS#{shard}"


# -- flow runs ---------------------------------------------------------------------------------


def flow_run(run_id: uuid.UUID) -> tuple[str, str]:
    """The flow run's item."""
    return f"RUN#{run_id}", META


def flow_run_state(run_id: uuid.UUID, moment: datetime, state_id: uuid.UUID) -> tuple[str, str]:
    """One entry of a flow run's state history."""
    return f"RUN#{run_id}", f"{STATE_PREFIX}{ts(moment)}#{state_id}"


def flow_run_lease(run_id: uuid.UUID) -> tuple[str, str]:
    """The run's lease: renewed by its runner's heartbeats, read by the reaper (ttl)."""
    return f"RUN#{run_id}", LEASE


def flow_run_sort(expected_start: datetime, run_id: uuid.UUID) -> str:
    """A flow run's sort key in both indexes: expected start time, then id."""
    return f"{ts(expected_start)}#{run_id}"


def flow_runs_by_state(state_type: StateType, shard: int = 0) -> str:
    """gsi1 partition of the flow runs currently in ``state_type``."""
    return f"RUNSTATE#{state_type.value}#{shard}"


def flow_runs_all(shard: int = 0) -> str:
    """gsi2 partition of every flow run."""
    return f"RUNS#{shard}"


def idempotency(flow_id: uuid.UUID, key: str) -> tuple[str, str]:
    """The item that claims an idempotency key for one flow (it names the run that holds it)."""
    return f"RUNKEY#{flow_id}#{key}", META


# -- task runs ---------------------------------------------------------------------------------


def task_run(task_run_id: uuid.UUID | str) -> tuple[str, str]:
    """The task run's item."""
    return f"TASKRUN#{task_run_id}", META


def task_runs_of(flow_run_id: uuid.UUID | str | None, shard: int = 0) -> str:
    """gsi2 partition listing the task runs of a flow run (or of no flow run)."""
    return f"RUNTASKS#{flow_run_id}" if flow_run_id else f"RUNTASKS#none#{shard}"


def task_run_sort(created: datetime | str, task_run_id: uuid.UUID | str) -> str:
    """A task run's sort key within its flow run: creation time (a datetime, or ISO text), then id."""
    return f"{ts_text(created) if isinstance(created, str) else ts(created)}#{task_run_id}"


# -- logs --------------------------------------------------------------------------------------


def log_line(run_id: uuid.UUID, moment: datetime, line_id: uuid.UUID) -> tuple[str, str]:
    """One log line of a run (flow run, or task run outside a flow)."""
    return f"LOG#{run_id}", f"{ts(moment)}#{line_id}"


def logs_of(run_id: uuid.UUID) -> str:
    """The partition of a run's log lines."""
    return f"LOG#{run_id}"


# -- transactions: records and locks -----------------------------------------------------------

TXN_RECORD = "RECORD"
TXN_LOCK = "LOCK"
MAX_TXN_KEY_CHARS = 500
"""The longest transaction key, in characters (``TXN#`` + 500 x 4 bytes fits DynamoDB's 2,048)."""


def transaction_key(key: object) -> str:
    """Return ``key`` when it can name a transaction record or lock.

    Any text of 1-500 characters is a key (cache keys are hashes, paths, user strings …),
    as long as it is valid Unicode (no lone surrogates: it must encode as UTF-8).

    Raises:
        InvalidKeyError: not a string, empty, too long, or not encodable as UTF-8.
    """
    if not isinstance(key, str) or not key:
        raise InvalidKeyError(key, "a transaction key must be a non-empty string")
    if len(key) > MAX_TXN_KEY_CHARS:
        raise InvalidKeyError(key, f"a transaction key must be at most {MAX_TXN_KEY_CHARS} characters")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidKeyError(key, "a transaction key must be valid Unicode (no lone surrogate)") from exc
    return key


def transaction_record(key: str) -> tuple[str, str]:
    """The committed record of a transaction (a task's cached result). Validates ``key``."""
    return f"TXN#{transaction_key(key)}", TXN_RECORD


def transaction_lock(key: str) -> tuple[str, str]:
    """The lock of a SERIALIZABLE transaction (holder, lease, fencing token). Validates ``key``."""
    return f"TXN#{transaction_key(key)}", TXN_LOCK


# -- artifacts ---------------------------------------------------------------------------------

VERSION_PREFIX = "V#"


def artifact(artifact_id: uuid.UUID) -> tuple[str, str]:
    """The artifact's item."""
    return f"ART#{artifact_id}", META


def artifact_version(key: str, version: int) -> tuple[str, str]:
    """Version ``version`` of the artifact key ``key`` (zero-padded, so versions sort as text)."""
    return f"ARTKEY#{key}", f"{VERSION_PREFIX}{version:010d}"


def artifact_versions(key: str) -> str:
    """The partition of an artifact key's versions."""
    return f"ARTKEY#{key}"


def artifacts_of(run_id: uuid.UUID) -> str:
    """gsi1 partition of the artifacts of a run (a flow run, or a task run outside a flow)."""
    return f"RUNART#{run_id}"


def artifacts_all(shard: int = 0) -> str:
    """gsi2 partition of every artifact."""
    return f"ARTS#{shard}"


def artifact_sort(created: datetime, artifact_id: uuid.UUID) -> str:
    """An artifact's sort key in both indexes: creation time, then id."""
    return f"{ts(created)}#{artifact_id}"


# -- variables ---------------------------------------------------------------------------------


def variable(name: str) -> tuple[str, str]:
    """The variable's item."""
    return f"VAR#{name}", META


def variables_index(shard: int = 0) -> str:
    """gsi2 partition listing variables by name."""
    return f"VARS#{shard}"


# -- work pools, work queues, workers ----------------------------------------------------------

QUEUE_PREFIX = "QUEUE#"
WORKER_PREFIX = "WORKER#"


def work_pool(name: str) -> tuple[str, str]:
    """The work pool's item."""
    return f"POOL#{name}", META


def work_pool_partition(name: str) -> str:
    """The partition holding a work pool, its queues and its workers."""
    return f"POOL#{name}"


def work_pools_index(shard: int = 0) -> str:
    """gsi2 partition listing work pools by name."""
    return f"POOLS#{shard}"


def work_queue(pool: str, name: str) -> tuple[str, str]:
    """A work queue's item, in its pool's partition."""
    return f"POOL#{pool}", f"{QUEUE_PREFIX}{name}"


def worker(pool: str, name: str) -> tuple[str, str]:
    """A worker's item, in its pool's partition."""
    return f"POOL#{pool}", f"{WORKER_PREFIX}{name}"


# -- events ------------------------------------------------------------------------------------


def event(event_id: uuid.UUID) -> tuple[str, str]:
    """The event's item."""
    return f"EVT#{event_id}", META


def events_of_day(day: str, shard: int = 0) -> str:
    """gsi1 partition of the events that occurred on ``day`` (``yyyymmdd``, UTC)."""
    return f"EVTS#{day}#{shard}"


def event_day(occurred: datetime) -> str:
    """The ``yyyymmdd`` (UTC) of an event's partition in gsi1."""
    return f"{occurred.year:04d}{occurred.month:02d}{occurred.day:02d}"


def events_of_resource(resource_id: str) -> str:
    """gsi2 partition of the events about one resource (its ``overcast.resource.id``)."""
    return f"EVTRES#{resource_id}"


def event_sort(occurred: datetime, event_id: uuid.UUID) -> str:
    """An event's sort key in both indexes: when it occurred, then its id."""
    return f"{ts(occurred)}#{event_id}"


# -- deployments -------------------------------------------------------------------------------

SLOTS = "SLOTS"
DUE = "DUE"


def deployment(deployment_id: uuid.UUID) -> tuple[str, str]:
    """The deployment's item."""
    return f"DEPLOY#{deployment_id}", META


def deployments_index(shard: int = 0) -> str:
    """gsi2 partition listing deployments by ``<flow name>/<name>``."""
    return f"DEPLOYS#{shard}"


def deployment_slots(deployment_id: uuid.UUID | str) -> tuple[str, str]:
    """The deployment's concurrency slots: its limit, its strategy and the runs holding a slot."""
    return f"DEPLOY#{deployment_id}", SLOTS


def deployment_due(deployment_id: uuid.UUID) -> tuple[str, str]:
    """When the scheduler must next look at the deployment (present while it can be scheduled)."""
    return f"DEPLOY#{deployment_id}", DUE


def due_index(shard: int = 0) -> str:
    """gsi1 partition of the deployments the scheduler looks at, by when they are due."""
    return f"DUE#{shard}"


def due_sort(due: datetime, deployment_id: uuid.UUID) -> str:
    """A due item's sort key: when, then the deployment's id."""
    return f"{ts(due)}#{deployment_id}"


def deployment_runs(deployment_id: uuid.UUID | str) -> str:
    """The partition of a deployment's scheduled runs (one index item each)."""
    return f"DEPLOYRUNS#{deployment_id}"


def pool_runs(pool: str, shard: int = 0) -> str:
    """The partition of a work pool's scheduled and pending runs (one index item each)."""
    return f"POOLRUNS#{pool}#{shard}"


# -- automations -------------------------------------------------------------------------------

BUCKET_PREFIX = "BUCKET#"
CHILDREN_PREFIX = "CHILDREN#"
FIRING_PREFIX = "FIRING#"


def automation(automation_id: uuid.UUID) -> tuple[str, str]:
    """The automation's item."""
    return f"AUTO#{automation_id}", META


def automation_partition(automation_id: uuid.UUID) -> str:
    """The partition of an automation, its buckets, child firings and firing records."""
    return f"AUTO#{automation_id}"


def automations_index(shard: int = 0) -> str:
    """gsi2 partition listing automations in creation order."""
    return f"AUTOS#{shard}"


def automations_of_owner(owner_resource: str) -> str:
    """gsi1 partition listing the automations a resource owns (a deployment's triggers)."""
    return f"AUTOOWNER#{owner_resource}"


def automation_sort(created: datetime, automation_id: uuid.UUID) -> str:
    """An automation's sort key in both indexes: creation time, then id."""
    return f"{ts(created)}#{automation_id}"


def enabled_automations() -> tuple[str, str]:
    """The item mapping every enabled automation to its version (what caches are checked against)."""
    return "AUTO#INDEX", "ENABLED"


def automation_bucket(automation_id: uuid.UUID, path: str, key_hash: str) -> tuple[str, str]:
    """An event trigger's bucket: the trigger's path, then the hash of its ``for_each`` labels."""
    return f"AUTO#{automation_id}", f"{BUCKET_PREFIX}{path}#{key_hash}"


def automation_children(automation_id: uuid.UUID, path: str) -> tuple[str, str]:
    """The child firings of the compound or sequence trigger at ``path``."""
    return f"AUTO#{automation_id}", f"{CHILDREN_PREFIX}{path}"


def automation_firing(automation_id: uuid.UUID, firing_id: uuid.UUID) -> tuple[str, str]:
    """A firing's record (its actions' outcomes)."""
    return f"AUTO#{automation_id}", f"{FIRING_PREFIX}{firing_id}"


def automation_firings(automation_id: uuid.UUID) -> str:
    """gsi1 partition listing an automation's firings by when they occurred."""
    return f"AUTOFIRINGS#{automation_id}"


def firings_unfinished(shard: int = 0) -> str:
    """gsi2 partition of the firings whose actions have not finished, by when they may be run again."""
    return f"AUTOUNFINISHED#{shard}"


def automations_due(shard: int = 0) -> str:
    """gsi1 partition of the proactive buckets whose window is running, by when it ends."""
    return f"AUTODUE#{shard}"


def automation_due_sort(end: datetime, automation_id: uuid.UUID, path: str, key_hash: str) -> str:
    """A proactive bucket's sort key in ``automations_due``: its window's end, then its key."""
    return f"{ts(end)}#{automation_id}#{path}#{key_hash}"


# -- global concurrency limits -----------------------------------------------------------------


def concurrency_limit(name: str) -> tuple[str, str]:
    """The concurrency limit's item: its settings and the leases holding its slots."""
    return f"LIMIT#{name}", META


def concurrency_limits_index(shard: int = 0) -> str:
    """gsi2 partition listing concurrency limits by name."""
    return f"LIMITS#{shard}"


def concurrency_lease(lease_id: uuid.UUID) -> tuple[str, str]:
    """A lease on concurrency slots: the limits it holds slots in, and when it ends (ttl)."""
    return f"LIMITLEASE#{lease_id}", META
