"""Results, caching and transactions as a Prefect 3 user writes them: committed work is never redone."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support import wait_until

from overcast import flow, task
from overcast.cache_policies import INPUTS, NO_CACHE
from overcast.results import load_result
from overcast.testing import Harness
from overcast.transactions import CommitMode, get_transaction, transaction


def _counter() -> tuple[list[Any], Any]:
    calls: list[Any] = []
    return calls, calls.append


# -- caching ------------------------------------------------------------------------------------


def test_a_cached_task_runs_once_across_flow_runs_and_says_it_was_cached(harness: Harness) -> None:
    calls, note = _counter()

    @task(cache_policy=INPUTS)
    def square(x: int) -> int:
        note(x)
        return x * x

    @flow
    def pipeline(x: int) -> int:
        return square(x)

    assert pipeline(4) == 16
    assert pipeline(4) == 16
    assert pipeline(5) == 25
    assert calls == [4, 5]
    second = harness.flow_runs()[1]  # newest first: the second run of pipeline(4)
    (run,) = harness.task_runs(second.id)
    assert run.state.name == "Cached" and run.state.is_completed()


def test_a_cached_result_can_be_read_back_from_its_state_alone(harness: Harness) -> None:
    @task(cache_key_fn=lambda context, parameters: f"doubled-{parameters['x']}")
    def double(x: int) -> dict[str, int]:
        return {"value": x * 2}

    @flow
    def pipeline() -> dict[str, int]:
        return double(21)

    assert pipeline() == {"value": 42}
    (run,) = harness.task_runs(harness.flow_runs()[0].id)
    # what another process sees: the state's data is a reference, loadable on its own
    assert load_result(run.state.data) == {"value": 42}


def test_refresh_cache_runs_again_and_replaces_the_record(harness: Harness) -> None:
    calls, note = _counter()

    @task(cache_key_fn=lambda context, parameters: "the-one-key")
    def stamp(tag: str) -> str:
        note(tag)
        return tag

    @flow
    def pipeline(tag: str, refresh: bool) -> str:
        return stamp.with_options(refresh_cache=refresh)(tag)

    assert pipeline("first", False) == "first"
    assert pipeline("second", False) == "first"  # the record answers
    assert pipeline("third", True) == "third"  # refreshed
    assert pipeline("fourth", False) == "third"
    assert calls == ["first", "third"]


def test_an_expired_record_no_longer_counts(harness: Harness) -> None:
    calls, note = _counter()

    @task(cache_policy=INPUTS, cache_expiration=timedelta(milliseconds=50))
    def fetch(x: int) -> int:
        note(x)
        return x

    @flow
    def pipeline() -> int:
        return fetch(1)

    pipeline()
    committed = datetime.now(UTC)
    wait_until(lambda: datetime.now(UTC) > committed + timedelta(milliseconds=60), timeout=5)
    pipeline()
    assert calls == [1, 1]


def test_no_cache_persists_nothing_and_always_runs(harness: Harness) -> None:
    calls, note = _counter()

    @task(cache_policy=NO_CACHE)
    def fetch(x: int) -> int:
        note(x)
        return x

    @flow
    def pipeline() -> int:
        return fetch(1) + fetch(1)

    assert pipeline() == 2
    assert calls == [1, 1]


def test_an_input_the_policy_cannot_hash_fails_the_run_naming_the_argument(harness: Harness) -> None:
    @task(cache_policy=INPUTS)
    def use(lock: Any, x: int) -> int:
        return x

    @flow
    def pipeline() -> int:
        return use(threading.Lock(), 1)

    with pytest.raises(Exception, match="lock") as info:
        pipeline()
    assert "INPUTS" in str(info.value) or "cache_key_fn" in str(info.value)


# -- durable reruns ---------------------------------------------------------------------------


def test_a_retried_flow_run_redoes_only_what_did_not_complete(harness: Harness) -> None:
    calls, note = _counter()
    failures = iter([True, False])

    @task
    def extract(n: int) -> list[int]:
        note("extract")
        return list(range(n))

    @task
    def load(rows: list[int]) -> int:
        note("load")
        if next(failures):
            raise RuntimeError("the warehouse is down")
        return len(rows)

    @flow(retries=1, persist_result=True)
    def etl(n: int) -> int:
        return load(extract(n))

    assert etl(3) == 3
    assert calls == ["extract", "load", "load"]  # extract committed in the first attempt
    states = [r.state.name for r in harness.task_runs(harness.flow_runs()[0].id)]
    assert sorted(states) == ["Cached", "Completed", "Completed", "Failed"]


# -- transactions -----------------------------------------------------------------------------


def test_a_failed_transaction_rolls_back_what_succeeded_newest_first(harness: Harness) -> None:
    undone: list[str] = []

    def make(name: str) -> Any:
        @task(name=name, persist_result=True)
        def step() -> str:
            if name == "fail":
                raise ValueError("boom")
            return name

        @step.on_rollback
        def undo(txn: Any) -> None:
            undone.append(name)

        return step

    first, second, fail = make("first"), make("second"), make("fail")

    @flow
    def pipeline() -> None:
        with transaction():
            first()
            second()
            fail()

    with pytest.raises(ValueError, match="boom"):
        pipeline()
    assert undone == ["second", "first"]


def test_a_transaction_commits_records_and_runs_commit_hooks_in_order(harness: Harness) -> None:
    committed: list[str] = []
    calls, note = _counter()

    @task(cache_key_fn=lambda context, parameters: f"step-{parameters['name']}")
    def step(name: str) -> str:
        note(name)
        return name.upper()

    @step.on_commit
    def done(txn: Any) -> None:
        committed.append(txn.key)

    inside: list[list[str]] = []

    @flow
    def pipeline() -> list[str]:
        with transaction(key="batch") as txn:
            out = [step("a"), step("b")]
            assert get_transaction() is txn
            inside.append(list(committed))
        return out

    assert pipeline() == ["A", "B"]
    assert inside == [[]]  # lazily: with the outer transaction, not before
    assert committed == ["step-a", "step-b"]
    assert pipeline() == ["A", "B"]  # cached: not run, not committed again
    assert calls == ["a", "b"]
    assert committed == ["step-a", "step-b"]


def test_nested_records_are_not_written_when_the_outer_transaction_fails(harness: Harness) -> None:
    calls, note = _counter()

    @task(cache_key_fn=lambda context, parameters: "nested-key")
    def work() -> int:
        note("work")
        return 7

    @flow
    def pipeline(fail: bool) -> int:
        with transaction():
            with transaction(commit_mode=CommitMode.LAZY):
                value = work()
            if fail:
                raise RuntimeError("outer failed")
        return value

    with pytest.raises(RuntimeError):
        pipeline(True)
    assert pipeline(False) == 7
    assert pipeline(False) == 7
    assert calls == ["work", "work"]  # the first run's record was rolled back


def test_values_set_on_a_transaction_reach_hooks_and_nested_ones(harness: Harness) -> None:
    seen: list[Any] = []

    @task(persist_result=True)
    def step() -> int:
        get_transaction().set("rows", 3)  # type: ignore[union-attr]
        return 1

    @step.on_commit
    def report(txn: Any) -> None:
        seen.append((txn.get("rows"), txn.get("source"), txn.get("missing", None)))

    @flow
    def pipeline() -> int:
        with transaction() as txn:
            txn.set("source", "s3")
            return step()

    assert pipeline() == 1
    assert seen == [(3, "s3", None)]


def test_a_transaction_with_a_record_reads_it_instead_of_running_again(harness: Harness) -> None:
    def once() -> tuple[bool, Any]:
        with transaction(key="report-2026-11-25") as txn:
            ran = not txn.is_committed()
            if ran:
                txn.stage({"rows": 12})
        return ran, txn.read()

    assert once() == (True, {"rows": 12})
    assert once() == (False, {"rows": 12})


_RACER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from overcast.transactions import IsolationLevel, transaction

    ledger, ready, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    ready.touch()
    while not go.exists():
        pass
    with transaction(key="race", isolation_level=IsolationLevel.SERIALIZABLE) as txn:
        if not txn.is_committed():
            with ledger.open("a") as out:
                out.write(f"{sys.argv[4]}\\n")
            txn.stage(f"written by {sys.argv[4]}")
    print(txn.read())
    """
)


def test_two_processes_racing_a_serializable_key_run_the_body_once(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVERCAST_")}
    env["OVERCAST_HOME"] = str(tmp_path / "home")
    ledger, go = tmp_path / "ledger", tmp_path / "go"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(ledger), str(tmp_path / f"ready{i}"), str(go), f"racer{i}"],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    wait_until(lambda: all((tmp_path / f"ready{i}").exists() for i in range(2)), timeout=60)
    go.touch()
    outputs = [racer.communicate(timeout=60)[0].strip() for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0]
    writers = ledger.read_text().split()
    assert len(writers) == 1
    assert outputs == [f"written by {writers[0]}"] * 2


def test_a_persisted_result_reads_back_through_the_state_another_client_sees(harness: Harness) -> None:
    @task(persist_result=True, result_serializer="json")
    def report(n: int) -> dict[str, Any]:
        return {"rows": n, "payload": "x" * 5000}  # large: stored as a blob, not inlined

    @flow
    def pipeline() -> None:
        report(3)

    pipeline()
    (run,) = harness.task_runs(harness.flow_runs()[0].id)
    fetched = harness.runtime.client.read_task_run(run.id)  # as a reader elsewhere gets it
    assert "inline" not in fetched.state.data  # a claim check, not the value
    assert fetched.state.result() == {"rows": 3, "payload": "x" * 5000}


_CRASHING_FLOW = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from overcast import flow, task

    ledger, marker = Path(sys.argv[1]), Path(sys.argv[2])

    @task
    def step(name: str) -> str:
        with ledger.open("a") as out:
            out.write(name + "\\n")
        if name == "second" and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)  # the machine goes away mid-flow
        return name.upper()

    @flow(persist_result=True)
    def pipeline() -> list[str]:
        return [step("first"), step("second"), step("third")]

    print(pipeline())
    """
)


def test_a_flow_run_killed_midway_and_run_again_does_not_redo_committed_tasks(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVERCAST_")}
    env["OVERCAST_HOME"] = str(tmp_path / "home")
    ledger, marker = tmp_path / "ledger", tmp_path / "killed"
    command = [sys.executable, "-c", _CRASHING_FLOW, str(ledger), str(marker)]
    killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert killed.returncode == -9
    assert ledger.read_text().split() == ["first", "second"]

    overcast = [sys.executable, "-m", "overcast.infra.cli"]
    listed = subprocess.run(
        [*overcast, "flow-run", "ls", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (run,) = json.loads(listed.stdout)
    assert run["state"]["type"] == "RUNNING"  # nobody was left to say otherwise
    subprocess.run([*overcast, "flow-run", "retry", run["id"]], env=env, timeout=60, check=True)

    rerun = subprocess.run(
        command,
        env={**env, "OVERCAST_FLOW_RUN_ID": run["id"]},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert rerun.stdout.strip() == "['FIRST', 'SECOND', 'THIRD']"
    assert ledger.read_text().split() == ["first", "second", "second", "third"]  # first was not redone
    listed = subprocess.run(
        [*overcast, "flow-run", "ls", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (again,) = json.loads(listed.stdout)
    assert (again["id"], again["state"]["type"]) == (run["id"], "COMPLETED")


def test_async_tasks_cache_and_roll_back_like_sync_ones(harness: Harness) -> None:
    calls, note = _counter()
    undone: list[int] = []

    @task(cache_policy=INPUTS, on_rollback=[lambda txn: undone.append(1)])
    async def fetch(x: int) -> int:
        note(x)
        return x * 10

    @flow
    async def pipeline(fail: bool) -> int:
        with transaction():
            value = await fetch(1)
            if fail:
                raise RuntimeError("later step failed")
        return value

    with pytest.raises(RuntimeError):
        asyncio.run(pipeline(True))
    assert undone == [1]
    assert asyncio.run(pipeline(False)) == 10
    assert asyncio.run(pipeline(False)) == 10
    assert calls == [1, 1]  # rolled back once, then committed and cached


@pytest.mark.aws
def test_a_task_keeps_its_results_on_s3_and_another_process_reads_them(
    harness: Harness, aws: Any, unique: Any
) -> None:
    bucket = unique("overcast-task-results")
    aws.client("s3").create_bucket(Bucket=bucket)
    storage = f"s3://{bucket}/pipeline?{aws.query()}"

    @task(persist_result=True, result_storage=storage)
    def rows(n: int) -> list[int]:
        return list(range(n))

    @flow
    def pipeline() -> int:
        return len(rows(1000))

    assert pipeline() == 1000
    (run,) = harness.task_runs(harness.flow_runs()[0].id)
    assert run.state.data["storage"] == storage
    stored = aws.client("s3").list_objects_v2(Bucket=bucket)["Contents"]
    assert [obj["Key"] for obj in stored] == [f"pipeline/{run.state.data['key']}"]
    reader = "import json, sys; from overcast.results import load_result; print(sum(load_result(json.loads(sys.argv[1]))))"
    out = subprocess.run(
        [sys.executable, "-c", reader, json.dumps(run.state.data)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == str(sum(range(1000)))


def test_two_tasks_caching_on_inputs_never_answer_for_each_other(harness: Harness) -> None:
    @task(cache_policy=INPUTS)
    def square(x: int) -> int:
        return x * x

    @task(cache_policy=INPUTS)
    def cube(x: int) -> int:
        return x**3

    @flow
    def pipeline() -> tuple[int, int]:
        return square(3), cube(3)

    assert pipeline() == (9, 27)
    assert pipeline() == (9, 27)


def test_process_pool_tasks_cache_through_the_same_control_plane(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import os, sys
        from pathlib import Path
        from overcast import flow, task
        from overcast.cache_policies import INPUTS
        from overcast.task_runners import ProcessPoolTaskRunner

        ledger = Path(sys.argv[1])

        @task(cache_policy=INPUTS)
        def heavy(x: int) -> int:
            with ledger.open("a") as out:
                out.write(f"{os.getpid()}\\n")
            return x * x

        @flow(task_runner=ProcessPoolTaskRunner(2))
        def pipeline() -> list[int]:
            return [f.result() for f in heavy.map([1, 2, 3])]

        if __name__ == "__main__":
            print(pipeline(), pipeline())
        """
    )
    (tmp_path / "flow.py").write_text(script)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVERCAST_")}
    env["OVERCAST_HOME"] = str(tmp_path / "home")
    ledger = tmp_path / "ledger"
    out = subprocess.run(
        [sys.executable, str(tmp_path / "flow.py"), str(ledger)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.strip() == "[1, 4, 9] [1, 4, 9]"
    pids = ledger.read_text().split()
    assert len(pids) == 3  # the second run was answered from the records the workers committed
    assert str(os.getpid()) not in pids


def test_a_persisted_flow_result_reads_back_through_the_state_another_client_sees(harness: Harness) -> None:
    @flow(persist_result=True)
    def big() -> dict[str, Any]:
        return {"payload": "x" * 5000}  # large: stored as a blob, not inlined

    @flow(result_serializer="json")  # a serializer alone asks for persistence, as in Prefect
    def small() -> list[int]:
        return [1, 2, 3]

    @flow
    def plain() -> list[int]:
        return [1, 2, 3]

    assert big() == {"payload": "x" * 5000} and small() == [1, 2, 3] and plain() == [1, 2, 3]
    runs = {run.flow_name: run for run in harness.flow_runs()}
    stored = {name: harness.runtime.client.read_flow_run(run.id).state for name, run in runs.items()}
    assert "storage" in stored["big"].data  # a claim check, not the value
    assert stored["big"].result() == {"payload": "x" * 5000}
    assert stored["small"].data["serializer"] == "json" and stored["small"].result() == [1, 2, 3]
    assert stored["plain"].data == [1, 2, 3]  # not persisted: a small JSON result shown inline


def test_a_flow_result_that_cannot_be_persisted_fails_the_run(harness: Harness) -> None:
    @flow(persist_result=True, result_serializer="json")
    def unwritable() -> object:
        return object()

    state = unwritable(return_state=True)
    assert state.is_failed() and "the result could not be persisted" in (state.message or "")
    assert harness.flow_runs()[0].state.is_failed()


def test_a_task_that_names_its_result_storage_persists_its_result(harness: Harness) -> None:
    @task(result_serializer="json")
    def numbers() -> list[int]:
        return [4, 5, 6]

    @flow
    def pipeline() -> list[int]:
        return numbers()

    assert pipeline() == [4, 5, 6]
    (run,) = harness.task_runs(harness.flow_runs()[0].id)
    assert run.state.data["serializer"] == "json" and load_result(run.state.data) == [4, 5, 6]
