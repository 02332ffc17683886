"""AWS Lambda entry for the tick: ``overcast.handlers.aws.tick.handler``.

An EventBridge schedule (``rate(1 minute)``) invokes it with its scheduled-event payload,
which it ignores: every tick does the same sweeps (see ``overcast.core.services.tick``) over
the control plane built once per cold start. The answer lists what the tick did.
"""

from __future__ import annotations

from typing import Any

from overcast.handlers import bootstrap


def handler(event: Any, context: Any) -> dict[str, Any]:
    """Run one tick."""
    return bootstrap.control_plane().tick.run().as_dict()
