"""`overcast artifact ls|inspect` and `overcast variable ls|get|set|unset`, after the artifacts tour example."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TYPES = ["image", "link", "markdown", "table", "progress"]


def _run(args: list[str], home: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OVERCAST_HOME": str(home)}
    for name in ("OVERCAST_STORE", "OVERCAST_BLOBS", "OVERCAST_API_URL"):
        env.pop(name, None)
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=120, check=False, cwd=cwd)


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "overcast.infra.cli", *args], home)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("cli-artifacts")
    done = _run([sys.executable, "artifacts_tour.py"], home, cwd=EXAMPLES)
    assert done.returncode == 0, done.stderr
    assert "overcast artifact ls" in done.stdout
    assert "hot: ['Cairo', 'Perth']" in done.stderr  # the flow read the variable (threshold 25)
    return home


def test_the_tour_published_one_artifact_of_each_type(home: Path) -> None:
    out = _cli(home, "artifact", "ls").stdout
    rows = [line for line in out.splitlines() if "tour-" in line]
    assert sorted(row.split("│")[3].strip() for row in rows) == sorted(TYPES)
    assert "5 rows x 2 columns" in out and "100%" in out and "image/png" in out
    only_tables = _cli(home, "artifact", "ls", "--type", "table").stdout
    assert "tour-readings" in only_tables and "tour-report" not in only_tables


def test_ls_by_key_and_by_flow_run(home: Path) -> None:
    by_key = _cli(home, "artifact", "ls", "--key", "tour-report").stdout
    assert "tour-report" in by_key and "tour-chart" not in by_key
    run_id = _cli(home, "flow-run", "ls").stdout.split("│")[-2].strip()  # the one run's id
    assert len(run_id) == 36
    by_run = _cli(home, "artifact", "ls", "--flow-run", run_id).stdout
    assert all(f"tour-{name}" in by_run for name in ("report", "readings", "docs", "chart", "progress"))


def test_inspect_shows_the_latest_version_and_the_history(home: Path) -> None:
    out = _cli(home, "artifact", "inspect", "tour-report").stdout
    assert "1 (latest)" in out and "The day's summary" in out
    assert "Weather report" in out and "2 at or above 25 °C: Cairo, Perth" in out
    assert "History of tour-report" in out
    table = _cli(home, "artifact", "inspect", "tour-readings").stdout
    assert "Lisbon" in table and "35.5" in table
    chart = _cli(home, "artifact", "inspect", "tour-chart").stdout
    assert "image/png image" in chart and "/image" in chart


def test_inspect_of_an_unknown_key_fails_clearly(home: Path) -> None:
    missing = _cli(home, "artifact", "inspect", "no-such-key")
    assert missing.returncode == 1 and "no artifact has the key 'no-such-key'" in missing.stderr
    bad = _cli(home, "artifact", "ls", "--type", "chart")
    assert bad.returncode == 1 and "cannot list artifacts" in bad.stderr


def test_variables_from_the_command_line(home: Path) -> None:
    listing = _cli(home, "variable", "ls").stdout
    assert "tour_alert_threshold" in listing and "25" in listing and "tour" in listing
    assert _cli(home, "variable", "get", "tour_alert_threshold").stdout.strip() == "25"
    assert _cli(home, "variable", "set", "regions", '["eu", "us"]', "--tag", "geo").returncode == 0
    assert json.loads(_cli(home, "variable", "get", "regions").stdout) == ["eu", "us"]
    assert _cli(home, "variable", "set", "greeting", "hello world").returncode == 0
    assert _cli(home, "variable", "get", "greeting").stdout.strip() == "hello world"
    taken = _cli(home, "variable", "set", "greeting", "hi")
    assert taken.returncode == 1 and "--overwrite" in taken.stderr
    assert _cli(home, "variable", "set", "greeting", "hi", "--overwrite").returncode == 0
    assert _cli(home, "variable", "get", "greeting").stdout.strip() == "hi"
    assert "geo" in _cli(home, "variable", "ls", "--tag", "geo").stdout
    assert _cli(home, "variable", "unset", "greeting").returncode == 0
    gone = _cli(home, "variable", "get", "greeting")
    assert gone.returncode == 1 and "not found" in gone.stderr
    assert _cli(home, "variable", "unset", "greeting").returncode == 1


def test_bad_variables_are_refused_clearly(home: Path) -> None:
    bad_name = _cli(home, "variable", "set", "Bad Name", "1")
    assert bad_name.returncode == 1 and "lowercase letters, digits, underscores and dashes" in bad_name.stderr
    too_big = _cli(home, "variable", "set", "big", json.dumps("x" * 6000))
    assert too_big.returncode == 1 and "over the limit of 5,000" in too_big.stderr
