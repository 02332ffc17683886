"""Engine overhead: flows and tasks next to plain Python, one JSON line per workload and client.

Each workload (``bench/engine/workloads.py``: sequential, submit, map, flow_runs, tasks_outside,
import) runs in a fresh interpreter with a timeout, after a one-flow probe that tells whether
the framework runs here at all. Overcast runs over two clients sharing one temporary
``OVERCAST_HOME``:

- ``direct``: the SDK's default, in process over SQLite;
- ``http``: ``overcast server`` on a free loopback port, with ``OVERCAST_API_URL`` pointing at it.

A client that cannot run (the SDK not importable yet, the server not starting, the SDK not
reaching the server) gets one ``"skipped": "<reason>"`` line per workload instead.
``--framework prefect`` runs the same workloads under Prefect with its default client (no
``PREFECT_API_URL``: a temporary server subprocess); ``--vs-prefect`` runs Prefect, then
Overcast, then prints a last line of ratios against the issue's targets (``bench/vs_prefect.sh``).

    python bench/engine.py [--n 1000] [--flows 50] [--outside 200] [--clients direct,http]
    python bench/engine.py --framework prefect --python bench/.venv-prefect/bin/python
    python bench/engine.py --vs-prefect bench/.venv-prefect/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine import harness, ratios

WORKLOADS = ("sequential", "submit", "map", "flow_runs", "tasks_outside", "cache_miss", "cache_hit", "import")
CLIENTS = {"overcast": ("direct", "http"), "prefect": ("default",)}
HOME_ENV = {"overcast": "OVERCAST_HOME", "prefect": "PREFECT_HOME"}
PREFECT_API = (
    "default: no PREFECT_API_URL, so the built-in 'ephemeral' profile "
    "(PREFECT_SERVER_EPHEMERAL_ENABLED=true, alias PREFECT_SERVER_ALLOW_EPHEMERAL_MODE) starts a "
    "temporary API server subprocess (uvicorn, SQLite under PREFECT_HOME) in every process"
)


def emit(line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)


def units(workload: str, opts: argparse.Namespace) -> int | None:
    """Units timed in ``workload`` (``None`` for ``import``, which times interpreters)."""
    return {"flow_runs": opts.flows, "tasks_outside": opts.outside, "probe": 1, "import": None}.get(
        workload, opts.n
    )


def argv(workload: str, opts: argparse.Namespace) -> list[str]:
    n = units(workload, opts) or 1
    warmup = min(opts.warmup, max(1, n // 10))  # at most a tenth of the timed work
    return [
        "--n",
        str(n),
        "--warmup",
        str(warmup),
        "--repeat",
        str(opts.repeat),
        "--budget",
        str(opts.budget),
    ]


def skipped(subject: harness.Subject, opts: argparse.Namespace, reason: str) -> Iterator[dict[str, Any]]:
    for workload in opts.workloads:
        yield {
            "workload": workload,
            "framework": subject.framework,
            "client": subject.client,
            "n": units(workload, opts),
            "skipped": reason,
        }


def _reason(line: dict[str, Any]) -> str:
    return str(line["error"]).strip().splitlines()[-1] if "error" in line else ""


def run_subject(
    subject: harness.Subject,
    opts: argparse.Namespace,
    workdir: Path,
    server: harness.OvercastServer | None = None,
) -> Iterator[dict[str, Any]]:
    """Probe ``subject``, then run every workload through it (or say why not)."""

    def run(workload: str) -> dict[str, Any]:
        print(f"engine: {subject.framework}/{subject.client}: {workload}", file=sys.stderr, flush=True)
        line = harness.run_workload(
            subject, workload, argv(workload, opts), workdir=workdir, timeout=opts.timeout
        )
        if server is not None:
            line["server_peak_rss_mb"] = server.peak_rss_mb()
        return line

    try:
        before = server.latest_flow_run_id() if server else None
    except (OSError, RuntimeError) as exc:
        yield from skipped(subject, opts, f"cannot list flow runs on overcast server: {exc}")
        return
    probe = run("probe")
    if "error" in probe:
        yield from skipped(subject, opts, f"{subject.framework} cannot run a flow here: {_reason(probe)}")
        return
    if server is not None:
        try:
            recorded = server.latest_flow_run_id() != before
        except (OSError, RuntimeError) as exc:
            recorded, probe["warning"] = False, str(exc)
        if not recorded:
            reason = (
                f"OVERCAST_API_URL={server.url} was set, but the server recorded no flow run: "
                "the SDK's HTTP client is missing or ignores it"
            )
            yield from skipped(subject, opts, reason)
            return
    yield probe
    for workload in opts.workloads:
        yield run(workload)


def run_framework(
    framework: str, python: str, clients: list[str], opts: argparse.Namespace
) -> Iterator[dict[str, Any]]:
    """Every workload under ``framework`` over each client, sharing one temporary home."""
    with tempfile.TemporaryDirectory(prefix=f"bench-engine-{framework}-") as tmp:
        workdir = Path(tmp)
        home = workdir / "home"
        home.mkdir()
        env = harness.clean_env(**{HOME_ENV[framework]: str(home)})
        for client in clients:
            if client != "http":
                yield from run_subject(harness.Subject(framework, python, client, env), opts, workdir)
                continue
            if framework != "overcast":
                raise SystemExit(f"--clients http is for overcast only (not {framework})")
            try:
                with harness.overcast_server(python, env, workdir) as server:
                    subject = harness.Subject(
                        framework, python, client, env | {"OVERCAST_API_URL": server.url}
                    )
                    yield from run_subject(subject, opts, workdir, server)
            except RuntimeError as exc:  # the server did not come up
                subject = harness.Subject(framework, python, client, env)
                yield from skipped(subject, opts, str(exc).splitlines()[0][:500])


def parse(args: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=sorted(CLIENTS), default="overcast")
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter of the framework's venv (default: this one)"
    )
    parser.add_argument("--vs-prefect", metavar="PYTHON", help="Prefect's interpreter: run both, then ratios")
    parser.add_argument(
        "--clients", type=lambda s: s.split(","), help="comma-separated (default: all the framework's)"
    )
    parser.add_argument("--workloads", type=lambda s: s.split(","), default=list(WORKLOADS))
    parser.add_argument("--n", type=int, default=1000, help="task runs in sequential, submit and map")
    parser.add_argument("--flows", type=int, default=50, help="flow runs in flow_runs")
    parser.add_argument("--outside", type=int, default=200, help="task runs in tasks_outside")
    parser.add_argument("--warmup", type=int, default=10, help="most units run before timing (≤ n/10)")
    parser.add_argument("--repeat", type=int, default=3, help="most timed runs per workload (median)")
    parser.add_argument(
        "--budget", type=float, default=10, help="seconds of timed runs after which a workload starts no more"
    )
    parser.add_argument("--timeout", type=float, default=240, help="seconds allowed each subprocess")
    opts = parser.parse_args(args)
    if opts.clients and set(opts.clients) - {"direct", "http", "default"}:
        parser.error("--clients: choose from direct, http (overcast) and default (prefect)")
    unknown = set(opts.workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}; choose from {', '.join(WORKLOADS)}")
    # absolute (children run in a temporary directory) but unresolved (a venv's python is a symlink)
    for name in ("python", "vs_prefect"):
        path = getattr(opts, name)
        if path is not None:
            if not Path(path).exists():
                parser.error(f"no interpreter at {path}")
            setattr(opts, name, str(Path(path).absolute()))
    if min(opts.n, opts.flows, opts.outside, opts.repeat) < 1:
        parser.error("--n, --flows, --outside and --repeat must be at least 1")
    return opts


def main() -> None:
    opts = parse()
    if not opts.vs_prefect:
        for line in run_framework(opts.framework, opts.python, opts.clients or CLIENTS[opts.framework], opts):
            emit(line)
        return

    runs: dict[str, list[dict[str, Any]]] = {}
    sides = (
        ("prefect", opts.vs_prefect, list(CLIENTS["prefect"])),
        ("overcast", opts.python, opts.clients or list(CLIENTS["overcast"])),
    )
    for framework, python, clients in sides:
        runs[framework] = []
        for line in run_framework(framework, python, clients, opts):
            emit(line)
            runs[framework].append(line)
    summary = ratios.summarize(runs["prefect"], runs["overcast"])
    versions = {
        line["framework"]: line["version"] for lines in runs.values() for line in lines if line.get("version")
    }
    emit(
        {
            "bench": "engine_vs_prefect",
            "python": {
                "prefect": harness.interpreter_version(opts.vs_prefect),
                "overcast": harness.interpreter_version(opts.python),
            },
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "versions": versions,
            "prefect_api": PREFECT_API,
            "n": opts.n,
            "flows": opts.flows,
            "outside": opts.outside,
            "repeat": opts.repeat,
            "budget_s": opts.budget,
            "ratio": "prefect / overcast (higher is better; target is the minimum)",
            "all_met": summary.pop("all_met"),
            "ratios": summary,
        }
    )


if __name__ == "__main__":
    main()
