"""``overcast concurrency-limit create|ls|inspect|update|delete`` against a temporary OVERCAST_HOME."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from overcast import _runtime
from overcast.concurrency import concurrency
from overcast.infra.cli import build


def _fresh_process() -> None:
    """Forget this process's runtime, as a new ``overcast`` command starts without one."""
    current = _runtime._current
    if current is not None:
        current.close()
    _runtime._current = None


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path))
    for name in ("OVERCAST_STORE", "OVERCAST_BLOBS", "OVERCAST_API_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_runtime, "_current", None)  # built from the settings above on first use
    yield tmp_path
    _fresh_process()


def cli(*args: str) -> Any:
    return CliRunner().invoke(build(), ["concurrency-limit", *args])


def ok(*args: str) -> str:
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return str(result.stdout)


def refused(*args: str) -> str:
    result = cli(*args)
    assert result.exit_code != 0, result.output
    return str(result.output)


def test_create_ls_inspect_update_and_delete(home: Path) -> None:
    assert ok("create", "db", "5") == "created concurrency limit db with 5 slots\n"
    assert "rate limit (2 slots/s) openai.api with 10 slots" in ok(
        "create", "openai.api", "10", "--slot-decay-per-second", "2"
    )
    ok("create", "tag:etl", "0", "--inactive")
    assert "already exists" in refused("create", "db", "3")
    assert (home / "overcast.db").exists()  # kept in the home's store, across commands

    _fresh_process()
    with concurrency("db", occupy=2):  # the SDK, in this process, over the same home
        listed = {row["name"]: row for row in json.loads(ok("ls", "--json"))}
        shown = ok("inspect", "db")
    assert sorted(listed) == ["db", "openai.api", "tag:etl"]
    assert (listed["db"]["limit"], listed["db"]["active_slots"]) == (5, 2)
    assert (listed["openai.api"]["slot_decay_per_second"], listed["tag:etl"]["active"]) == (2.0, False)
    assert "concurrency limit" in shown and "2 of 5" in shown
    table = ok("ls")
    assert "openai.api" in table and "tag:etl" in table and "Active slots" in table
    assert "tag:etl" not in ok("ls", "--prefix", "open")

    assert "0 of 5" in ok("inspect", "db")  # given back when the block ended
    assert "updated concurrency limit db: 7 slots, inactive" in ok(
        "update", "db", "--limit", "7", "--inactive"
    )
    inspected = json.loads(ok("inspect", "db", "--json"))
    assert (inspected["limit"], inspected["active"]) == (7, False)
    assert "rate limit (0.5 slots/s)" in ok("update", "db", "--slot-decay-per-second", "0.5", "--active")

    assert ok("delete", "db") == "deleted concurrency limit db\n"
    for args in (("delete", "db"), ("inspect", "db"), ("update", "db", "--limit", "1")):
        assert "concurrency limit 'db' not found" in refused(*args)


def test_bad_input_is_refused_with_the_rule(home: Path) -> None:
    assert "is invalid" in refused("create", "a/b", "1")
    assert "greater than or equal to 0" in refused("create", "--", "db", "-1")
    assert "greater than or equal to 0" in refused("create", "db", "1", "--slot-decay-per-second", "-2")
    assert "nothing to change" in refused("update", "db")
    assert "is invalid" in refused("inspect", "..")
    assert json.loads(ok("ls", "--json")) == []
