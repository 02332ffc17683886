"""The demo's flow: a CSV of orders lands in a bucket, and a flow summarises it.

``examples/run demo`` deploys ``summarise_upload`` with a trigger on ``aws.s3.object.created``
for ``s3://uploads/incoming/*.csv``: every CSV uploaded there (``overcast upload``, the API, or
a file copied into ``~/.overcast/buckets/uploads/incoming/``) runs it, with the bucket and key
taken from the event. The same code runs on AWS Lambda, where the upload is a real S3 PutObject.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict

from overcast import flow, get_run_logger, task
from overcast.artifacts import create_table_artifact
from overcast.storage import read_object


@task(retries=2, retry_delay_seconds=0.2)
def fetch(bucket: str, key: str) -> list[dict[str, str]]:
    """Read the uploaded CSV into rows."""
    text = read_object(bucket, key).decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    get_run_logger().info("read %d orders from s3://%s/%s", len(rows), bucket, key)
    return rows


@task
def revenue(row: dict[str, str]) -> tuple[str, float]:
    """One order's region and revenue."""
    return row["region"], int(row["quantity"]) * float(row["unit_price"])


@task
def by_region(amounts: list[tuple[str, float]]) -> dict[str, float]:
    """Revenue per region, largest first."""
    totals: dict[str, float] = defaultdict(float)
    for region, amount in amounts:
        totals[region] += amount
    return {region: round(total, 2) for region, total in sorted(totals.items(), key=lambda kv: -kv[1])}


@flow(log_prints=True, persist_result=True)
def summarise_upload(bucket: str, key: str) -> dict[str, float]:
    """Summarise an uploaded CSV of orders: revenue per region, as a result and a table artifact."""
    rows = fetch(bucket, key)
    totals = by_region(revenue.map(rows).result())
    create_table_artifact(
        [{"region": region, "revenue": total} for region, total in totals.items()],
        key="revenue-by-region",
        description=f"Revenue per region in s3://{bucket}/{key}",
    )
    print(f"s3://{bucket}/{key}: {len(rows)} orders, revenue {sum(totals.values()):.2f}")
    return totals
