"""Google Cloud Functions entry for the API: the HTTP function ``api``.

Deploy with ``--entry-point api`` (functions-framework's HTTP signature). functions-framework
hands over a Flask request; a2wsgi runs the FastAPI (ASGI) app behind a WSGI call on it, so the
same app answers here as behind Mangum on Lambda. Built once per instance, at import.
"""

from __future__ import annotations

import io

import functions_framework
from a2wsgi import ASGIMiddleware
from flask import Request, Response

from overcast.handlers import bootstrap

_wsgi = ASGIMiddleware(bootstrap.api_app())  # type: ignore[arg-type]


@functions_framework.http
def api(request: Request) -> Response:
    """Answer one HTTP request."""
    # Hand a2wsgi the body already read (functions-framework has consumed the stream), and
    # drain the WSGI response fully, so that the ASGI app's task finishes instead of hanging.
    environ = {**request.environ, "wsgi.input": io.BytesIO(request.get_data())}
    return Response.from_app(_wsgi, environ, buffered=True)
