"""One engine workload under one framework, in this (fresh) interpreter; prints one JSON object.

The framework is any module that exports Prefect 3's ``flow`` and ``task`` (``prefect`` or
``overcast``): the flows below are written once and run unchanged under either. This file
imports nothing but the standard library and that module, so it runs in Prefect's venv too.

Workloads (``n`` is the number of units; the unit is a task run, or a flow run for
``flow_runs``):

- ``sequential``: one flow calling ``add(i)`` n times;
- ``submit``: one flow doing ``add.submit(i)`` n times, then ``.result()`` on each future;
- ``map``: one flow doing ``add.map(range(n))``, then ``.result()`` on each future;
- ``flow_runs``: n calls of an empty flow;
- ``tasks_outside``: n calls of ``add(i)`` with no flow around them;
- ``cache_miss``: one flow calling a cached ``add(i)`` (``cache_key_fn``, persisted result) n
  times under keys no run used before: each call runs, persists and commits its record;
- ``cache_hit``: the same flow over keys committed before timing: each call reads its record
  and the result instead of running;
- ``import``: ``import X`` and ``from X import flow, task`` timed in fresh interpreters;
- ``probe``: one flow with one task, to learn whether the framework runs at all here.

Each plain-Python baseline does the same work without the framework (n calls of the bare
function; n calls of an empty function for ``flow_runs``), timed here before the framework is
imported (best of 5). ``overhead_us = (wall_s - plain_s) / n * 1e6``, ``wall_s`` being the
median of up to ``--repeat`` timed runs (fewer when they would overrun ``--budget`` seconds). For
the three one-flow workloads, ``task_overhead_us`` also takes off ``flow_s``, the same flow run
with no task. Before timing, one unit runs (its end, measured from the parent's spawn, is
``first_flow_s``: a cold start) and then ``--warmup`` units. The parent sets the environment
(client, home); this file only labels its result with ``--client``.

    python bench/engine/workloads.py --framework prefect --workload sequential --n 1000
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

WORKLOADS = (
    "probe",
    "sequential",
    "submit",
    "map",
    "flow_runs",
    "tasks_outside",
    "cache_miss",
    "cache_hit",
    "import",
)
# the parent's wall clock (time.time()) just before it spawned this interpreter
T0_ENV = "BENCH_ENGINE_T0"
IMPORT_REPEAT = 5
FLOW_OF_TASKS = ("sequential", "submit", "map", "cache_miss", "cache_hit")  # one flow run around n task runs
IMPORT_TIMEOUT_S = 60


def add(x: int) -> int:
    return x + 1


def nothing() -> None:
    return None


class Units:
    """The workloads' flows and task, built from one framework's ``flow`` and ``task``."""

    def __init__(self, framework: str) -> None:
        module = importlib.import_module(framework)
        flow, task = module.flow, module.task
        self.version: str | None = getattr(module, "__version__", None)

        @task
        def add(x: int) -> int:
            return x + 1

        @flow
        def sequential(n: int) -> int:
            return sum(add(i) for i in range(n))

        @flow
        def submitted(n: int) -> int:
            futures = [add.submit(i) for i in range(n)]
            return sum(future.result() for future in futures)

        @flow
        def mapped(n: int) -> int:
            return sum(future.result() for future in add.map(range(n)))

        @flow
        def empty() -> None:
            return None

        # Prefect 3 and Overcast read cache_key_fn(context, parameters) alike.
        @task(
            cache_key_fn=lambda context, parameters: f"{parameters['salt']}-{parameters['x']}",
            persist_result=True,
        )
        def cached_add(x: int, salt: str) -> int:
            return x + 1

        @flow
        def cached(n: int, salt: str) -> int:
            return sum(cached_add(i, salt) for i in range(n))

        self.cached = cached
        self.salt = f"hit-{os.getpid()}-{time.time_ns()}"  # this process's committed keys

        self.add = add
        self.flows: dict[str, Callable[[int], int]] = {
            "probe": sequential,
            "sequential": sequential,
            "submit": submitted,
            "map": mapped,
        }
        self.empty = empty

    def run(self, workload: str, n: int) -> None:
        """Run ``n`` units of ``workload``; raise if the framework computed a wrong answer."""
        if workload == "flow_runs":
            for _ in range(n):
                self.empty()
            return
        if workload == "tasks_outside":
            total = sum(self.add(i) for i in range(n))
        elif workload == "cache_miss":
            total = self.cached(n, f"miss-{os.getpid()}-{time.time_ns()}")  # keys never used before
        elif workload == "cache_hit":
            total = self.cached(n, self.salt)
        else:
            total = self.flows[workload](n)
        if total != n * (n + 1) // 2:
            raise RuntimeError(f"{workload}({n}) returned {total!r}, expected {n * (n + 1) // 2}")


def plain(workload: str, n: int) -> None:
    """The same work as ``Units.run`` in plain Python."""
    if workload == "flow_runs":
        for _ in range(n):
            nothing()
    else:
        sum(add(i) for i in range(n))


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _since_spawn() -> float | None:
    t0 = os.environ.get(T0_ENV)
    return round(time.time() - float(t0), 4) if t0 else None


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def descendants_peak_rss_mb(pid: int) -> float | None:
    """Sum of the peak RSS (VmHWM) of ``pid``'s live descendants: Prefect's ephemeral server.

    Linux only (reads /proc); ``None`` elsewhere or when there is no descendant.
    """
    children: dict[int, list[int]] = {}
    try:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    except OSError:
        return None
    total_kb, stack = 0, list(children.get(pid, []))
    while stack:
        child = stack.pop()
        stack.extend(children.get(child, []))
        try:
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return round(total_kb / 1024, 1) if total_kb else None


def measure_units(args: argparse.Namespace) -> dict[str, Any]:
    """Time ``args.n`` units of a run workload under the framework, next to plain Python."""
    workload, n = args.workload, args.n
    plain_s = min(_time(lambda: plain(workload, n)) for _ in range(5))

    import_s = _time(lambda: importlib.import_module(args.framework))
    units = Units(args.framework)
    units.run(workload, 1)
    first_s = _since_spawn()
    result: dict[str, Any] = {"version": units.version, "import_s": round(import_s, 4)}
    result["first_task_s" if workload == "tasks_outside" else "first_flow_s"] = first_s
    if workload == "probe":
        return result | {"n": 1}

    if args.warmup:
        units.run(workload, min(args.warmup, n))
    if workload == "cache_hit":
        units.run(workload, n)  # commit every key the timed runs read
    # The one flow run around the tasks, timed alone (n=0) so as to report the tasks' own cost.
    # Before the timed runs: after them, Prefect's server is still ingesting their events, and an
    # empty flow run then takes seconds.
    flow_s = _time(lambda: units.run(workload, 0)) if workload in FLOW_OF_TASKS else None
    # up to --repeat timed runs, stopping early once another would overrun --budget seconds
    walls: list[float] = []
    while len(walls) < args.repeat and (not walls or sum(walls) + walls[-1] <= args.budget):
        walls.append(_time(lambda: units.run(workload, n)))
    wall_s = statistics.median(walls)
    result |= {
        "n": n,
        "wall_s": round(wall_s, 6),
        "plain_s": round(plain_s, 6),
        "overhead_us": round((wall_s - plain_s) / n * 1e6, 2),
        "walls_s": [round(wall, 6) for wall in walls],
    }
    if flow_s is not None:
        result["flow_s"] = round(flow_s, 6)
        result["task_overhead_us"] = round((wall_s - flow_s - plain_s) / n * 1e6, 2)
    return result


def measure_import(args: argparse.Namespace) -> dict[str, Any]:
    """Median time of ``import X`` (and of ``from X import flow, task``) in fresh interpreters."""
    probe = (
        "import json, resource, time\n"
        "start = time.perf_counter()\n"
        "{statement}\n"
        "elapsed = time.perf_counter() - start\n"
        "print(json.dumps([elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss]))\n"
    )

    def fresh(statement: str) -> tuple[float, float, float]:
        """(seconds inside the import, process wall seconds, peak RSS MiB) of one interpreter."""
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", probe.format(statement=statement)],
            capture_output=True,
            text=True,
            timeout=IMPORT_TIMEOUT_S,
            check=True,
        )
        wall = time.perf_counter() - start
        elapsed, rss_kb = json.loads(done.stdout.strip().splitlines()[-1])
        return elapsed, wall, rss_kb / 1024

    fw = args.framework
    statements = {"import": f"import {fw}", "flow_task": f"from {fw} import flow, task", "plain": "pass"}
    fresh(statements["flow_task"])  # warm the file cache and write any missing .pyc
    runs = {key: [fresh(stmt) for _ in range(IMPORT_REPEAT)] for key, stmt in statements.items()}

    def median(key: str, field: int) -> float:
        return statistics.median(run[field] for run in runs[key])

    return {
        "n": IMPORT_REPEAT,
        "import_s": round(median("import", 0), 4),
        "import_flow_task_s": round(median("flow_task", 0), 4),
        "process_s": round(median("flow_task", 1), 4),
        "plain_process_s": round(median("plain", 1), 4),
        "import_peak_rss_mb": round(max(run[2] for run in runs["flow_task"]), 1),
        "plain_peak_rss_mb": round(max(run[2] for run in runs["plain"]), 1),
        "imports_s": [round(run[0], 4) for run in runs["import"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", required=True, help="module exporting flow and task")
    parser.add_argument("--workload", required=True, choices=WORKLOADS)
    parser.add_argument("--client", default="default", help="label only: the parent sets the env")
    parser.add_argument("--n", type=int, default=1000, help="units timed")
    parser.add_argument("--warmup", type=int, default=10, help="units run once before timing")
    parser.add_argument("--repeat", type=int, default=3, help="most timed runs (the median is reported)")
    parser.add_argument(
        "--budget", type=float, default=10, help="seconds of timed runs after which no other starts"
    )
    parser.add_argument("--out", type=Path, help="write the JSON here instead of stdout")
    args = parser.parse_args()
    if args.n < 1 or args.repeat < 1:
        parser.error("--n and --repeat must be at least 1")

    line: dict[str, Any] = {"workload": args.workload, "framework": args.framework, "client": args.client}
    try:
        if args.workload == "import":
            line |= measure_import(args)
        else:
            line |= measure_units(args)
    except Exception as exc:
        line["error"] = f"{type(exc).__name__}: {exc}"
        line["traceback"] = traceback.format_exc(limit=8)[-2000:]
    line["peak_rss_mb"] = _peak_rss_mb()
    line["children_peak_rss_mb"] = descendants_peak_rss_mb(os.getpid())
    text = json.dumps(line)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text, flush=True)


if __name__ == "__main__":
    main()
