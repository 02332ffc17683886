"""Google Cloud Functions entry for the tick: the HTTP function ``tick``.

Deploy with ``--entry-point tick`` (an HTTP function, not public) and call it every minute from
a Cloud Scheduler job with an OIDC token. Cloud Scheduler is outside the Cloud Functions API,
so ``overcast deploy gcp`` prints the ``gcloud scheduler jobs create http`` command. Every call
does the same sweeps (see ``overcast.core.services.tick``) over the control plane built once
per instance, and answers what it did as JSON.
"""

from __future__ import annotations

import json

import functions_framework
from flask import Request, Response

from overcast.handlers import bootstrap


@functions_framework.http
def tick(request: Request) -> Response:
    """Run one tick (the request's body, Cloud Scheduler's, is ignored)."""
    report = bootstrap.control_plane().tick.run().as_dict()
    return Response(json.dumps(report), status=200, mimetype="application/json")
