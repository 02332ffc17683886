"""A tour of artifacts and variables: a flow reads a variable and publishes one artifact of each type.

Runs on the embedded control plane (SQLite under ~/.overcast, or $OVERCAST_HOME); the image's
bytes go to the blob store next to it. Afterwards:

    overcast artifact ls
    overcast artifact inspect tour-report
    overcast variable ls
"""

from __future__ import annotations

import struct
import zlib

from overcast import (
    Variable,
    create_image_artifact,
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    flow,
    task,
    update_progress_artifact,
)

CITIES = {"Lisbon": 24.5, "Oslo": 9.0, "Cairo": 35.5, "Lima": 19.0, "Perth": 29.5}


@task
def measure(city: str) -> dict[str, object]:
    """Read a city's temperature (here: a fixed table standing in for a weather API)."""
    return {"city": city, "temp_c": CITIES[city]}


def bar_chart(values: list[float], bar: int = 24, height: int = 80) -> bytes:
    """A PNG bar chart of ``values``, drawn and encoded with the standard library only."""
    width, top = bar * len(values), max(values)
    rows = []
    for y in range(height):
        row = bytearray([0])  # filter type 0 for each scanline
        for x in range(width):
            value = values[x // bar]
            inside = x % bar < bar - 4 and height - y <= value / top * (height - 4)
            row += bytes((220, 90, 40) if inside else (245, 245, 245))
        rows.append(bytes(row))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


@flow(log_prints=True)
def weather_report() -> list[str]:
    """Measure every city, with a progress bar; publish the readings, a report, a link and a chart."""
    threshold = Variable.get("tour_alert_threshold", default=30)
    progress = create_progress_artifact(0, key="tour-progress", description="Cities measured")
    readings = []
    for done, city in enumerate(CITIES, start=1):
        readings.append(measure(city))
        update_progress_artifact(progress, 100 * done / len(CITIES))
    create_table_artifact(readings, key="tour-readings", description="Temperatures by city")
    hot = [str(r["city"]) for r in readings if float(r["temp_c"]) >= threshold]  # type: ignore[arg-type]
    create_markdown_artifact(
        f"# Weather report\n\n{len(readings)} cities measured; **{len(hot)}** at or above "
        f"{threshold} °C: {', '.join(hot) or 'none'}.",
        key="tour-report",
        description="The day's summary",
    )
    create_link_artifact(
        "https://docs.prefect.io/v3/develop/artifacts", "Artifacts in Prefect 3", key="tour-docs"
    )
    create_image_artifact(
        bar_chart([float(r["temp_c"]) for r in readings]),  # type: ignore[arg-type]
        key="tour-chart",
        description="Temperatures, one bar per city",
    )
    print(f"alert threshold {threshold} °C (from the variable tour_alert_threshold); hot: {hot}")
    return hot


if __name__ == "__main__":
    Variable.set("tour_alert_threshold", 25, tags=["tour"], overwrite=True)
    weather_report()
    print("\nDone. See what the flow published with:")
    print("  .venv/bin/overcast artifact ls")
    print("  .venv/bin/overcast artifact inspect tour-report")
    print("  .venv/bin/overcast variable ls")
