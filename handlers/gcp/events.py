"""Google Cloud Functions entry for storage events: the CloudEvent function ``storage``.

Deploy with ``--entry-point storage`` and a Cloud Storage trigger (Eventarc):
``--trigger-event-filters type=google.cloud.storage.object.v1.finalized`` and
``bucket=BUCKET`` (or ``deleted``, ``archived``, ``metadataUpdated``). Each CloudEvent becomes a
``gcp.storage.object.<finalized|deleted|archived|metadataUpdated>`` event about
``gs://<bucket>/<name>`` (see ``overcast.handlers.storage``), whose id comes from the
CloudEvent's: Eventarc's retries of one change are stored once.

A CloudEvent that cannot become an event (another type, malformed data) is answered 400 with
the reason as plain text; a store failure raises (500), so that Eventarc delivers the event again.
"""

from __future__ import annotations

import logging

import functions_framework
from cloudevents.abstract import CloudEvent
from werkzeug.exceptions import BadRequest
from werkzeug.wrappers import Response

from overcast.handlers.storage import NotificationError, gcs_event, ingest

logger = logging.getLogger("overcast.storage_events")


@functions_framework.cloud_event
def storage(cloud_event: CloudEvent) -> None:
    """Store the event of one Cloud Storage change."""
    try:
        event = gcs_event(cloud_event.get_attributes(), cloud_event.get_data())
    except NotificationError as exc:
        logger.error("CloudEvent %s refused: %s", cloud_event.get("id"), exc)
        reason = f"not a storage event Overcast can read: {exc}\n"
        raise BadRequest(response=Response(reason, status=400, mimetype="text/plain")) from exc
    ingest([event])
