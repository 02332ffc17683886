"""Random UUIDs for the hot path, without a system call.

``uuid.uuid4()`` reads ``os.urandom`` for every id: a system call that releases the GIL, and
re-taking it behind the reporter's busy thread cost tens of microseconds per task run. These
ids come from a private generator seeded from ``os.urandom`` (and reseeded in a forked child,
so parent and child never repeat each other). They are version-4 UUIDs, unique for every
practical purpose, not secrets: never use them as tokens.
"""

from __future__ import annotations

import os
import random
import uuid

_random = random.Random(os.urandom(32))  # noqa: S311 - ids, not secrets; private, so random.seed() cannot touch it
_VERSION_MASK = ~(0xF000 << 64) & ~(0xC000 << 48)
_VERSION_BITS = (0x4000 << 64) | (0x8000 << 48)


def _reseed() -> None:
    _random.seed(os.urandom(32))


os.register_at_fork(after_in_child=_reseed)


def new_id() -> uuid.UUID:
    """A fresh random (version 4) UUID."""
    return uuid.UUID(int=(_random.getrandbits(128) & _VERSION_MASK) | _VERSION_BITS)
