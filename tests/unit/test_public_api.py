"""The public surface of `overcast` is deliberate: this test pins it."""

from __future__ import annotations

import overcast


def test_all_is_pinned() -> None:
    assert overcast.__all__ == [
        "Artifact",
        "Flow",
        "Settings",
        "State",
        "Task",
        "Variable",
        "__version__",
        "allow_failure",
        "create_image_artifact",
        "create_link_artifact",
        "create_markdown_artifact",
        "create_progress_artifact",
        "create_table_artifact",
        "emit_event",
        "flow",
        "flush",
        "get_run_context",
        "get_run_logger",
        "quote",
        "runtime",
        "tags",
        "task",
        "unmapped",
        "update_progress_artifact",
    ]


def test_every_public_name_resolves() -> None:
    for name in overcast.__all__:
        assert getattr(overcast, name) is not None
    assert "Settings" in dir(overcast)
