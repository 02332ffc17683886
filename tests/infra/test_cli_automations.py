"""`overcast automation create|ls|inspect|pause|resume|firings|delete`, run as a user runs them,
over the embedded store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "overcast.infra.cli", "automation"]

YAML = textwrap.dedent(
    """
    automations:
      - name: new uploads
        description: every file dropped in the uploads bucket
        trigger:
          expect: [aws.s3.object.created]
          match: {aws.s3.bucket: uploads}
        actions:
          - type: do-nothing
      - name: quiet bucket
        trigger:
          expect: [aws.s3.object.created]
          posture: Proactive
          within: 3600
        actions:
          - type: call-webhook
            url: https://hooks.example.com/quiet
            payload: '{"text": "no upload in an hour"}'
    """
)


def _run(args: list[str], home: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OVERCAST_HOME": str(home), "COLUMNS": "200"}
    for name in ("OVERCAST_STORE", "OVERCAST_API_URL"):
        env.pop(name, None)
    return subprocess.run(
        args, capture_output=True, text=True, env=env, timeout=120, check=False, input=stdin
    )


def _cli(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return _run([*CLI, *args], home, stdin)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("cli-automations")
    (home / "automations.yaml").write_text(YAML)
    (home / "one.json").write_text(
        json.dumps(
            {
                "name": "flow failures",
                "trigger": {"expect": ["overcast.flow-run.Failed"], "threshold": 3, "within": 600},
                "actions": [{"type": "pause-automation", "source": "inferred"}],
            }
        )
    )
    return home


def test_create_from_yaml_and_json_then_list(home: Path) -> None:
    made = _cli(home, "create", "-f", str(home / "automations.yaml"))
    assert made.returncode == 0, made.stderr
    assert made.stdout.count("created automation") == 2 and "new uploads" in made.stdout
    one = _cli(home, "create", "--from-file", str(home / "one.json"))
    assert one.returncode == 0, one.stderr
    assert "flow failures" in one.stdout

    out = _cli(home, "ls")
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if "new uploads" in line)
    assert "enabled" in row and "on aws.s3.object.created where aws.s3.bucket=uploads" in row
    assert "do-nothing" in row
    quiet = next(line for line in out.stdout.splitlines() if "quiet bucket" in line)
    assert "no aws.s3.object.created for 1h" in quiet
    assert "call-webhook https://hooks.example.com/quiet" in quiet
    failures = next(line for line in out.stdout.splitlines() if "flow failures" in line)
    assert "(3x within 10m)" in failures and "pause-automation (inferred)" in failures

    listed = json.loads(_cli(home, "ls", "--json").stdout)
    assert {a["name"] for a in listed} >= {"new uploads", "quiet bucket", "flow failures"}


def test_a_bad_file_is_refused_with_the_reason_and_creates_nothing(home: Path) -> None:
    before = len(json.loads(_cli(home, "ls", "--json").stdout))
    bad = home / "bad.yaml"
    bad.write_text("- name: fine\n  trigger: {expect: [a.b]}\n- name: wrong\n  trigger: {threshold: 0}\n")
    out = _cli(home, "create", "-f", str(bad))
    assert out.returncode == 1
    assert "automation 2 (wrong)" in out.stderr and "trigger.event.threshold" in out.stderr
    template = _cli(
        home,
        "create",
        "-f",
        "-",
        stdin='{"name": "t", "trigger": {}, "actions": [{"type": "call-webhook", '
        '"url": "https://x.example.com", "payload": "{{ event"}]}',
    )
    assert template.returncode == 1 and "actions[0].payload" in template.stderr
    assert _cli(home, "create", "-f", str(home / "missing.yaml")).returncode == 1
    (home / "list.yaml").write_text("just a string\n")
    assert "must hold an automation" in _cli(home, "create", "-f", str(home / "list.yaml")).stderr
    assert len(json.loads(_cli(home, "ls", "--json").stdout)) == before


def test_inspect_pause_resume_and_delete_by_name_or_id(home: Path) -> None:
    _cli(home, "create", "-f", str(home / "one.json"))  # a second "flow failures"
    inspected = _cli(home, "inspect", "new uploads")
    assert inspected.returncode == 0, inspected.stderr
    assert "every file dropped in the uploads bucket" in inspected.stdout
    assert '"aws.s3.bucket": "uploads"' in inspected.stdout

    paused = _cli(home, "pause", "new uploads")
    assert paused.returncode == 0 and "paused" in paused.stdout
    row = next(line for line in _cli(home, "ls").stdout.splitlines() if "new uploads" in line)
    assert "paused" in row
    assert _cli(home, "resume", "new uploads").returncode == 0
    assert json.loads(_cli(home, "inspect", "new uploads", "--json").stdout)["enabled"] is True

    twice = _cli(home, "pause", "flow failures")
    assert twice.returncode == 1 and "2 automations are named 'flow failures'" in twice.stderr
    ids = [a["id"] for a in json.loads(_cli(home, "ls", "--json").stdout) if a["name"] == "flow failures"]
    deleted = _cli(home, "delete", ids[0])
    assert deleted.returncode == 0 and ids[0] in deleted.stdout
    assert _cli(home, "inspect", ids[0]).returncode == 1
    missing = _cli(home, "delete", "no such automation")
    assert missing.returncode == 1 and "no automation 'no such automation'" in missing.stderr


def test_firings_show_what_the_actions_did(home: Path) -> None:
    assert "has not fired" in _cli(home, "firings", "new uploads").stdout
    script = textwrap.dedent(
        """
        from overcast._runtime import get_runtime
        from overcast.core.events import Event

        get_runtime().client.emit_events([Event(
            event="aws.s3.object.created",
            resource={"overcast.resource.id": "s3://uploads/a.csv", "aws.s3.bucket": "uploads"},
        )])
        """
    )
    emitted = _run([sys.executable, "-c", script], home)
    assert emitted.returncode == 0, emitted.stderr
    out = _cli(home, "firings", "new uploads")
    assert out.returncode == 0, out.stderr
    assert "triggered" in out.stdout and "s3://uploads/a.csv" in out.stdout and "ok do-nothing" in out.stdout
    [record] = json.loads(_cli(home, "firings", "new uploads", "--json").stdout)
    assert record["outcomes"][0]["ok"] is True
