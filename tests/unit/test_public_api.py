"""The public surface of `overcast` is deliberate: this test pins it."""

from __future__ import annotations

import overcast


def test_all_is_pinned() -> None:
    assert overcast.__all__ == [
        "Flow",
        "Settings",
        "State",
        "Task",
        "__version__",
        "flow",
        "flush",
        "get_run_context",
        "get_run_logger",
        "task",
        "unmapped",
    ]


def test_every_public_name_resolves() -> None:
    for name in overcast.__all__:
        assert getattr(overcast, name) is not None
    assert "Settings" in dir(overcast)
