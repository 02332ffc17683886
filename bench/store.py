"""Key-value store throughput: put, get, query (100 items), transact (10 items), batch_put (1,000 items).

Prints one JSON line: ops/s per backend (memory, SQLite on a temp file, DynamoDB on moto's
server on 127.0.0.1). Each figure is the median of ``--repeat`` timed runs of the workload.

    python bench/store.py [--ops 2000] [--repeat 3] [--skip-dynamodb]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from overcast.core.ports import KeyValueStore, Put


def _rate(run: Callable[[], int], repeat: int) -> float:
    """Median operations per second over ``repeat`` runs (``run`` returns how many it did)."""
    rates = []
    for _ in range(repeat):
        start = time.perf_counter()
        done = run()
        rates.append(done / (time.perf_counter() - start))
    return round(statistics.median(rates), 1)


def measure(store: KeyValueStore, ops: int, repeat: int) -> dict[str, float]:
    """Run the five workloads against ``store`` and return ops/s for each."""
    payload = {"state": "RUNNING", "name": "flow-run", "tags": ["a", "b"], "params": {"x": 1, "y": 0.5}}
    counter = iter(range(10**9))

    def put() -> int:
        for i in range(ops):
            store.put({"pk": f"RUN#{i % 500}", "sk": "META", **payload})
        return ops

    store.batch_put([{"pk": "Q", "sk": f"{i:04d}", **payload} for i in range(100)])

    def get() -> int:
        for i in range(ops):
            store.get(f"RUN#{i % 500}", "META")
        return ops

    queries = max(ops // 20, 10)

    def query() -> int:
        for _ in range(queries):
            assert len(store.query("Q", limit=100).items) == 100
        return queries

    transactions = max(ops // 10, 10)

    def transact() -> int:
        for _ in range(transactions):
            batch = next(counter)
            store.transact([Put({"pk": f"T#{batch}", "sk": f"{j}", **payload}) for j in range(10)])
        return transactions

    batches = max(ops // 500, 2)

    def batch_put() -> int:
        for _ in range(batches):
            batch = next(counter)
            store.batch_put([{"pk": f"B#{batch}", "sk": f"{j:04d}", **payload} for j in range(1000)])
        return batches

    return {
        "put_ops_s": _rate(put, repeat),
        "get_ops_s": _rate(get, repeat),
        "query_100_ops_s": _rate(query, repeat),
        "transact_10_ops_s": _rate(transact, repeat),
        "batch_put_1000_ops_s": _rate(batch_put, repeat),
    }


def _moto() -> tuple[Any, str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "testing")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2000, help="puts and gets per run (other workloads scale)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-dynamodb", action="store_true")
    args = parser.parse_args()

    from overcast.adapters.factory import open_store
    from overcast.adapters.kv.dynamodb import create_table

    results: dict[str, Any] = {
        "bench": "store",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "ops": args.ops,
        "repeat": args.repeat,
    }
    with tempfile.TemporaryDirectory() as tmp:
        results["memory"] = measure(open_store("memory://bench"), args.ops, args.repeat)
        results["sqlite"] = measure(open_store(f"sqlite://{Path(tmp) / 'bench.db'}"), args.ops, args.repeat)
    if not args.skip_dynamodb:
        server, endpoint = _moto()
        try:
            from overcast.adapters._aws import aws_client

            create_table(aws_client("dynamodb", region="us-east-1", endpoint_url=endpoint), "bench")
            store = open_store(f"dynamodb://bench?region=us-east-1&endpoint={endpoint}")
            # moto answers in milliseconds, so its run is shorter; the figures are rates anyway.
            results["dynamodb_moto"] = measure(store, max(args.ops // 10, 50), 1)
        finally:
            server.stop()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
