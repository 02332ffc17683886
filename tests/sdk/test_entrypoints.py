"""Loading a deployment's flow from its entrypoint, where the deployment was made and elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from overcast.flows import load_flow_from_entrypoint

FLOW = "from overcast import flow\n\n@flow\ndef {name}() -> str:\n    return '{name}'\n"


def test_a_relative_entrypoint_is_found_from_the_deployments_path(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "flows.py").write_text(FLOW.format(name="there"))
    flow = load_flow_from_entrypoint("flows.py:there", base=str(tmp_path / "project"))
    assert flow() == "there"


def test_a_path_from_another_machine_falls_back_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A function runs a deployment made on a laptop: its package holds the project in the
    function's working directory, and the laptop's folder does not exist there."""
    (tmp_path / "flows_here.py").write_text(FLOW.format(name="packaged"))
    monkeypatch.chdir(tmp_path)
    flow = load_flow_from_entrypoint("flows_here.py:packaged", base="/home/someone/laptop-project")
    assert flow() == "packaged"


def test_an_existing_path_without_the_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.py"):
        load_flow_from_entrypoint("missing.py:f", base=str(tmp_path))
