"""A tour of Overcast's foundation on the embedded default: no server, no cloud account.

Everything lands under ~/.overcast (or $OVERCAST_HOME): an SQLite store, a blob directory, an
SQLite-backed queue, and a pool of warm worker processes that runs functions like Lambda does.
"""

from __future__ import annotations

import json
import os
import uuid

from overcast.adapters.factory import Adapters
from overcast.core.errors import ConditionFailedError, FunctionError
from overcast.core.settings import Settings


def shout(event: dict, context: object) -> dict:
    """A function with Lambda's signature; the tour invokes it in a worker process."""
    if event.get("fail"):
        raise ValueError(f"refusing {event['word']!r}")
    return {"word": event["word"].upper(), "pid": os.getpid(), "function": context.function_name}  # type: ignore[attr-defined]


def main() -> None:
    settings = Settings(functions={"shout": "foundation_tour:shout"})
    adapters = Adapters(settings)
    print(f"store   {settings.store_url}\nblobs   {settings.blobs_url}\nqueue   {settings.queue_url}\n")
    run = uuid.uuid4().hex[:8]
    store, blobs, queue = adapters.store, adapters.blobs, adapters.queue

    # A flow run as the control plane will keep it: created once, moved under a version guard.
    store.put(
        {"pk": f"RUN#{run}", "sk": "META", "state": "PENDING", "gsi1pk": "STATE#PENDING", "gsi1sk": run},
        if_absent=True,
    )
    item = store.get(f"RUN#{run}", "META")
    assert item is not None
    store.put({**item, "state": "RUNNING", "gsi1pk": "STATE#RUNNING"}, if_version=item["v"])
    try:  # a second runner that read the same version loses the race
        store.put({**item, "state": "RUNNING", "gsi1pk": "STATE#RUNNING"}, if_version=item["v"])
    except ConditionFailedError as exc:
        print(f"store   run {run} moved to RUNNING; a stale writer was refused: {exc}")
    running = store.query("STATE#RUNNING", index="gsi1", descending=True, limit=3).items
    print(f"store   latest RUNNING runs: {[i['pk'] for i in running]}")

    blobs.put(f"results/{run}.json", json.dumps({"answer": 42}).encode())
    print(f"blobs   wrote {blobs.url(f'results/{run}.json')}")

    for word in ("extract", "transform", "load"):
        queue.send(json.dumps({"run": run, "step": word}), group=run)
    steps = []
    while messages := queue.receive(10, visibility_s=30):
        for message in messages:
            steps.append(json.loads(message.body)["step"])
            queue.ack(message.receipt)
    print(f"queue   received in order: {steps}")

    invoker = adapters.invoker
    result = invoker.invoke("shout", {"word": "overcast"})
    print(f"invoke  shout -> {result['word']} (worker pid {result['pid']}, caller pid {os.getpid()})")
    try:
        invoker.invoke("shout", {"word": "rain", "fail": True})
    except FunctionError as exc:
        print(f"invoke  a failing function reports {exc.error_type}: {exc.error_message}")
    adapters.close()
    print("\nDone. Everything above lives under", settings.home)


if __name__ == "__main__":
    main()
