"""Transaction records (cache entries) and the locks of SERIALIZABLE transactions.

Keys are cache keys: any text of 1-500 characters, slashes, ``%``, ``#``, spaces and emoji
included. So a key never travels in the URL path (proxies and clients normalize ``%2F``, ``..``
and trailing slashes there); it travels

- in the query string, ``?key=…``, percent-encoded as any query value (``httpx`` does it with
  ``params={"key": key}``), for the record routes and for reading a lock;
- in the JSON body for the lock actions, which take and give back a ``Lease``.

Routes::

    GET    /records?key=K          the live record                       200 | 404
    PUT    /records?key=K          commit (once; or overwrite)           200 {written, record} | 409
    DELETE /records?key=K          delete                                200 {deleted}
    GET    /locks?key=K            the lease holding K now               200 | 404 (free)
    POST   /locks/acquire          take the lock (never waits)           200 Lease | 409 (held)
    POST   /locks/renew            extend a lease (body: the Lease)      200 Lease | 409 (lost)
    POST   /locks/check            is the lease still current?           200 Lease | 409 (lost)
    POST   /locks/release          let go (body: the Lease)              204 | 409 (lost)

``acquire`` answers at once: 409 Conflict (with ``Retry-After``) while another holder has the
lock; clients poll. A function that held the request open would bill for the wait, and API
Gateway cuts requests at 29 s. On the other routes 409 means a lease is lost: released, or
taken over after it ended (its fencing token is stale).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from overcast.core.errors import NotFoundError
from overcast.core.keys import MAX_TXN_KEY_CHARS
from overcast.core.services.locks import MAX_LEASE_S, FencingToken, Holder, Lease, TransactionKey
from overcast.core.services.records import CommitResult, TransactionRecord
from overcast.core.types import Bool, Float, UtcDateTime
from overcast.handlers.api.errors import ErrorResponse
from overcast.handlers.api.routes._deps import Plane

router = APIRouter(tags=["transactions"])

KeyQuery = Annotated[
    str,
    Query(
        min_length=1,
        max_length=MAX_TXN_KEY_CHARS,
        description="The transaction (cache) key: any text of 1-500 characters, percent-encoded.",
    ),
]
NO_RECORD = {404: {"model": ErrorResponse, "description": "No live record under this key"}}
LOST = {409: {"model": ErrorResponse, "description": "The lease is lost: released, or taken over"}}
LOCKED = {
    409: {"model": ErrorResponse, "description": "Another holder has the lock; retry after Retry-After"}
}


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecordCommit(_Request):
    """A record to commit under the key in the query string."""

    data: dict[str, JsonValue] = Field(description="The record's body, stored as given (opaque).")
    expires_at: UtcDateTime | None = Field(default=None, description="When the record stops counting.")
    overwrite: Bool = Field(default=False, description="Replace a live record (refresh_cache).")
    fencing_token: FencingToken | None = Field(
        default=None, description="Write only while this is the current token of the key's lock."
    )


class Deleted(BaseModel):
    """Whether a record was deleted."""

    deleted: bool


class LockRequest(_Request):
    """Who asks for the lock on ``key``, and for how long."""

    key: TransactionKey
    holder: Holder
    lease_s: Float = Field(gt=0, le=MAX_LEASE_S, description="How long the lease lasts unless renewed.")


@router.get("/records", response_model=TransactionRecord, responses=NO_RECORD)
def read_record(key: KeyQuery, plane: Plane) -> TransactionRecord:
    """Read the record committed under a key (404 when there is none or it expired)."""
    record = plane.records.read(key)
    if record is None:
        raise NotFoundError("record", key)
    return record


@router.put("/records", response_model=CommitResult, responses=LOST)
def commit_record(key: KeyQuery, body: RecordCommit, plane: Plane) -> CommitResult:
    """Commit a record once: a live record is kept and returned (``written: false``).

    ``overwrite`` replaces a live record; a ``fencing_token`` makes the write conditional on that
    lease still holding the key's lock (409 otherwise, and nothing is written).
    """
    return plane.records.commit(
        key,
        body.data,
        expires_at=body.expires_at,
        overwrite=body.overwrite,
        fencing_token=body.fencing_token,
    )


@router.delete("/records", response_model=Deleted)
def delete_record(key: KeyQuery, plane: Plane) -> Deleted:
    """Delete the record of a key (invalidate a cache entry); say whether there was one."""
    return Deleted(deleted=plane.records.delete(key))


@router.get(
    "/locks",
    response_model=Lease,
    responses={404: {"model": ErrorResponse, "description": "The lock is free"}},
)
def read_lock(key: KeyQuery, plane: Plane) -> Lease:
    """Read the lease that holds a key's lock now (404 when the lock is free)."""
    lease = plane.locks.read(key)
    if lease is None:
        raise NotFoundError("lock holder", key)
    return lease


@router.post("/locks/acquire", response_model=Lease, responses=LOCKED)
def acquire_lock(body: LockRequest, plane: Plane) -> Lease:
    """Take a key's lock, or take it over when its lease has ended; 409 while another holder has it.

    Asking again as the holder that has the lock renews that lease (same token).
    """
    return plane.locks.acquire(body.key, body.holder, body.lease_s, wait_s=0)


@router.post("/locks/renew", response_model=Lease, responses=LOST)
def renew_lock(body: Lease, plane: Plane) -> Lease:
    """Extend a lease (post back the Lease; its ``lease_s`` is the new length from now)."""
    return plane.locks.renew(body)


@router.post("/locks/check", response_model=Lease, responses=LOST)
def check_lock(body: Lease, plane: Plane) -> Lease:
    """Say whether a lease is still its key's current one: 200 with it as stored now, or 409."""
    return plane.locks.check(body)


@router.post("/locks/release", status_code=204, response_class=Response, responses=LOST)
def release_lock(body: Lease, plane: Plane) -> Response:
    """Let go of a lock (post back the Lease); releasing twice is harmless."""
    plane.locks.release(body)
    return Response(status_code=204)
