#!/usr/bin/env bash
# Overcast's engine next to Prefect's in one invocation: the same workloads under both, then ratios.
#
#   bench/vs_prefect.sh [bench/engine.py options]      e.g.  bench/vs_prefect.sh --n 200 --repeat 3
#
# Prefect runs from its own venv, bench/.venv-prefect, made here with prefect==$PREFECT_VERSION on
# the project venv's base interpreter and reused while that key (version, interpreter) holds.
# Overcast runs from the project's .venv. Prefect gets what a default user gets: no
# PREFECT_API_URL, so its built-in 'ephemeral' profile starts a temporary API server in each
# process. stdout is JSON lines (one per workload and client, the last one the ratios); pip and
# progress go to stderr.
#
# Reading Prefect's figures: ~1 s of each of its flow runs is the engine joining its heartbeat
# thread, which sleeps in 1 s steps (PrefectHQ/prefect#19641; heartbeats are on by default and
# PREFECT_FLOWS_HEARTBEAT_FREQUENCY cannot turn them off, its minimum being 30). Without that an
# empty flow run costs it ~0.1 s here. Its timed figures also exclude the events its temporary
# server is still ingesting; each line's process_total_s includes them.
set -euo pipefail

PREFECT_VERSION=3.9.1
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
project_python="$root/.venv/bin/python"
venv="$root/bench/.venv-prefect"

if [[ ! -x "$project_python" ]]; then
    echo "vs_prefect: no project venv at $root/.venv (make it first)" >&2
    exit 1
fi
base_python="$("$project_python" -c 'import sys; print(sys._base_executable)')"
key="prefect==$PREFECT_VERSION python=$("$base_python" -c 'import platform; print(platform.python_version())') $base_python"
if [[ "$(cat "$venv/.bench-key" 2>/dev/null)" != "$key" ]]; then
    echo "vs_prefect: making $venv ($key)" >&2
    rm -rf "$venv"
    "$base_python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "prefect==$PREFECT_VERSION" >&2
    printf '%s\n' "$key" >"$venv/.bench-key"
fi

cd "$root"
exec "$project_python" bench/engine.py --vs-prefect "$venv/bin/python" "$@"
