"""The pull worker: a process pool's due runs are claimed once and executed in subprocesses."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from support import wait_until

from overcast._runtime import _build, use_runtime
from overcast.core.settings import Settings
from overcast.core.states import StateType
from overcast.core.work_pools import ProcessPoolCreate
from overcast.deployments import run_deployment
from overcast.flows import load_flow_from_entrypoint
from overcast.workers import Worker

FLOW = textwrap.dedent(
    """
    import os
    from pathlib import Path
    from overcast import flow

    @flow
    def stamp(ledger: str, n: int) -> int:
        with Path(ledger).open("a") as out:
            out.write(f"{n} {os.getpid()}\\n")
        return n * 2
    """
)


def test_two_workers_share_a_pools_runs_and_run_each_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("OVERCAST_HOME", str(home))  # the run subprocesses inherit it
    runtime = _build(Settings(home=home))
    (tmp_path / "flows.py").write_text(FLOW)
    ledger = tmp_path / "ledger"
    with use_runtime(runtime):
        runtime.client.create_work_pool(ProcessPoolCreate.model_validate({"name": "laptop"}))
        load_flow_from_entrypoint(f"{tmp_path / 'flows.py'}:stamp").deploy(
            "pulled", work_pool_name="laptop", entrypoint=f"{tmp_path / 'flows.py'}:stamp"
        )
        runs = [
            run_deployment("stamp/pulled", parameters={"ledger": str(ledger), "n": n}, timeout=0)
            for n in range(4)
        ]
        assert {r.state.type for r in runs} == {StateType.SCHEDULED}  # a pull pool: nobody pushes
        workers = [Worker(runtime.client, "laptop", name=f"w{i}", limit=2) for i in range(2)]

        def all_done() -> bool:
            for worker in workers:
                worker.poll()
            return all(runtime.client.read_flow_run(r.id).state.is_terminal for r in runs)

        wait_until(all_done, timeout=120)
        for worker in workers:
            for process in worker.running.values():
                process.wait(timeout=60)
    finished = [runtime.client.read_flow_run(r.id) for r in runs]
    assert [f.state.result() for f in finished] == [0, 2, 4, 6]
    assert sorted(int(line.split()[0]) for line in ledger.read_text().splitlines()) == [0, 1, 2, 3]
    runtime.close()


def test_serve_runs_its_deployments_scheduled_runs_in_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    home = tmp_path / "home"
    monkeypatch.setenv("OVERCAST_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    runtime = _build(Settings(home=home))
    (tmp_path / "flows.py").write_text(FLOW)
    ledger = tmp_path / "ledger"
    flow = load_flow_from_entrypoint(f"{tmp_path / 'flows.py'}:stamp")
    stop = threading.Event()
    with use_runtime(runtime):
        server = threading.Thread(
            target=flow.serve,
            args=("every-second",),
            kwargs={
                "interval": 1,
                "parameters": {"ledger": str(ledger), "n": 7},
                "poll_s": 0.1,
                "stop": stop,
            },
        )
        server.start()
        try:
            wait_until(lambda: ledger.exists() and len(ledger.read_text().splitlines()) >= 2, timeout=60)
        finally:
            stop.set()
            server.join(60)
    assert {line.split()[0] for line in ledger.read_text().splitlines()} == {"7"}
    runtime.close()
