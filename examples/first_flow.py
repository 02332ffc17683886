"""Your first Overcast flow: no server, no cloud account, no configuration.

Runs on the embedded control plane (SQLite under ~/.overcast). Afterwards:

    overcast flow-run ls
    overcast flow-run inspect <id>
    overcast task-run ls --flow-run <id>
    overcast logs <id>
"""

from __future__ import annotations

import random

from overcast import flow, get_run_logger, task


@task(retries=3, retry_delay_seconds=0.1)
def extract(day: str) -> list[int]:
    """Fetch the day's numbers (flaky, like a real API: retried up to three times)."""
    if random.random() < 0.3:  # noqa: S311 - a demo of retries
        raise ConnectionError("the source timed out")
    return [random.randint(1, 100) for _ in range(10)]  # noqa: S311


@task
def transform(value: int) -> int:
    """Square one value."""
    return value * value


@task
def load(values: list[int]) -> int:
    """Store the results (here: add them up) and report."""
    total = sum(values)
    get_run_logger().info("loaded %d values, total %d", len(values), total)
    return total


@flow(log_prints=True)
def daily_etl(day: str = "2026-11-24") -> int:
    """Extract, transform in parallel, load."""
    numbers = extract(day)
    squares = transform.map(numbers)
    total = load(squares)
    print(f"{day}: {total}")
    return total


if __name__ == "__main__":
    daily_etl()
    print("\nDone. See the run, its task runs and its logs with:")
    print("  .venv/bin/overcast flow-run ls")
    print("  .venv/bin/overcast flow-run inspect <id>      (then task-run ls --flow-run <id>, logs <id>)")
