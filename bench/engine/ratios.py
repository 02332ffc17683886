"""Prefect's figures over Overcast's, per workload and client, against the issue's targets.

Every ratio reads "how many times Prefect's cost is Overcast's" (higher is better for
Overcast); a target is met when the ratio reaches it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# workload -> (field compared, minimum Prefect/Overcast ratio or None for "report only")
TARGETS: dict[str, tuple[str, float | None]] = {
    "sequential": ("overhead_us", 100),  # per task run, called in a flow
    "submit": ("overhead_us", 100),  # per task run, .submit() then .result()
    "map": ("overhead_us", 100),  # per task run, .map() then .result()
    "flow_runs": ("overhead_us", 100),  # per flow run
    "tasks_outside": ("overhead_us", None),  # per task run with no flow: no target in the issue
    "cache_miss": ("overhead_us", None),  # per cached task run that runs and commits: report only
    "cache_hit": ("overhead_us", 100),  # per cached task run answered by its record
    "import": ("import_s", 10),  # `import X`, as the issue words it
    "import_flow_task": ("import_flow_task_s", 10),  # what a user runs: `from X import flow, task`
}
# reported with a target but left out of ``all_met``: not one of the targets
EXTRA = frozenset({"import_flow_task"})
RSS_TARGET = 2  # Overcast's peak RSS at most half of Prefect's
RUN_WORKLOADS = ("sequential", "submit", "map", "flow_runs", "tasks_outside", "cache_miss", "cache_hit")


def _ratio(prefect: Any, overcast: Any) -> float | None:
    numbers = isinstance(prefect, int | float) and isinstance(overcast, int | float)
    if not numbers or prefect <= 0 or overcast <= 0:
        return None
    return round(prefect / overcast, 2)


def compare(
    prefect: dict[str, Any], overcast: dict[str, Any], target: float | None, field: str
) -> dict[str, Any]:
    """One comparison: both figures, their ratio, and whether the target is met.

    For the one-flow workloads, ``ratio_net`` compares the tasks' own cost (the flow run around
    them taken off): informative, not a target.
    """
    entry: dict[str, Any] = {"prefect": prefect.get(field), "overcast": overcast.get(field)}
    if "task_overhead_us" in prefect or "task_overhead_us" in overcast:
        entry["ratio_net"] = _ratio(prefect.get("task_overhead_us"), overcast.get("task_overhead_us"))
    reason = (
        overcast.get("skipped") or overcast.get("error") or prefect.get("skipped") or prefect.get("error")
    )
    if reason:
        return entry | {"ratio": None, "target": target, "met": None, "missing": reason}
    ratio = _ratio(entry["prefect"], entry["overcast"])
    if ratio is None and isinstance(entry["overcast"], int | float) and entry["overcast"] <= 0:
        # Overcast's cost is inside the plain-Python noise: any finite target is met
        return entry | {
            "ratio": None,
            "target": target,
            "met": True,
            "note": "overcast at or below plain Python",
        }
    met = None if target is None or ratio is None else ratio >= target
    return entry | {"ratio": ratio, "target": target, "met": met}


def _peak_rss(lines: Iterable[dict[str, Any]]) -> float | None:
    peaks = [
        line["peak_rss_mb"]
        for line in lines
        if line.get("workload") in RUN_WORKLOADS and "error" not in line and "skipped" not in line
    ]
    return max(peaks) if peaks else None


def summarize(prefect_lines: list[dict[str, Any]], overcast_lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Ratios per Overcast client, each against Prefect's (single, default) client."""
    prefect = {line["workload"]: line for line in prefect_lines}
    clients: dict[str, dict[str, dict[str, Any]]] = {}
    for line in overcast_lines:
        clients.setdefault(line["client"], {})[line["workload"]] = line

    summary: dict[str, Any] = {}
    all_met: list[bool | None] = []
    for client, overcast in clients.items():
        table: dict[str, Any] = {}
        for name, (field, target) in TARGETS.items():
            workload = "import" if name.startswith("import") else name
            entry = compare(
                prefect.get(workload, {"error": "not run"}),
                overcast.get(workload, {"error": "not run"}),
                target,
                field,
            )
            table[name] = entry
            if target is not None and name not in EXTRA:
                all_met.append(entry["met"])
        rss = {"prefect": _peak_rss(prefect.values()), "overcast": _peak_rss(overcast.values())}
        ratio = _ratio(rss["prefect"], rss["overcast"])
        table["peak_rss_mb"] = rss | {
            "ratio": ratio,
            "target": RSS_TARGET,
            "met": None if ratio is None else ratio >= RSS_TARGET,
        }
        all_met.append(table["peak_rss_mb"]["met"])
        summary[client] = table
    summary["all_met"] = None if None in all_met or not all_met else all(all_met)
    return summary
