"""``overcast server``: the control-plane API under uvicorn, over the store the settings name.

The app is the one every entry point uses (``bootstrap.api_app()``), so the laptop server and
the Lambda and Cloud Functions entries answer alike. Ctrl-C or SIGTERM stop it gracefully:
in-flight requests finish, the store is closed, and the command exits 0.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Iterator
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    import uvicorn

# How long in-flight requests get to finish after Ctrl-C before their connections are dropped.
GRACEFUL_SHUTDOWN_S = 10


class LogLevel(StrEnum):
    """uvicorn's log levels (``info`` logs each request; ``warning`` only problems)."""

    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    DEBUG = "debug"
    TRACE = "trace"


def register(app: typer.Typer) -> None:
    """Add the ``server`` command to the root app."""
    app.command()(server)


def server(
    host: Annotated[
        str, typer.Option(help="Interface to listen on (0.0.0.0 for every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free port).")] = 4200,
    log_level: Annotated[
        LogLevel, typer.Option(case_sensitive=False, help="uvicorn's log level.")
    ] = LogLevel.INFO,
) -> None:
    """Serve the control-plane API over the embedded store (or the one OVERCAST_STORE names)."""
    import uvicorn
    from rich.console import Console

    from overcast.core.errors import OvercastError
    from overcast.handlers import bootstrap

    console, errors = (
        Console(highlight=False, soft_wrap=True),
        Console(stderr=True, highlight=False, soft_wrap=True),
    )
    try:
        app = bootstrap.api_app()
        sock = _bind(host, port)
    except OvercastError as exc:  # a bad OVERCAST_STORE, say
        errors.print(f"[red]cannot start the API: {exc}[/red]")
        bootstrap.reset()
        raise typer.Exit(1) from exc
    except OSError as exc:
        errors.print(f"[red]cannot listen on {host}:{port}: {exc.strerror or exc}[/red]")
        bootstrap.reset()
        raise typer.Exit(1) from exc
    try:
        settings = bootstrap.adapters().settings
        config = uvicorn.Config(
            app,
            log_level=log_level.value,
            lifespan="off",  # the app has no lifespan hooks
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )
        url = _url(sock)
        console.print(f"Overcast API on [bold]{url}/api[/bold]  (docs: {url}/api/docs)")
        console.print(f"store: {settings.store_url}")
        console.print("auth: bearer token (OVERCAST_API_KEY)" if settings.api_key else "auth: off")
        console.print("Press Ctrl-C to stop.")
        _graceful_server(config).run(sockets=[sock])
    finally:
        sock.close()
        bootstrap.reset()
    console.print("Overcast API stopped.")


def _bind(host: str, port: int) -> socket.socket:
    """Listen on ``host:port`` ourselves, so that the URL printed is the real one (port 0 included)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if sock.family == socket.AF_INET6:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _graceful_server(config: uvicorn.Config) -> uvicorn.Server:
    """uvicorn's server, minus re-raising the stop signal after a graceful shutdown.

    uvicorn raises the captured SIGINT/SIGTERM again once it has shut down, so that its process
    dies of the signal; here a signal is how the user stops the server, and a clean stop exits 0.
    """
    import uvicorn
    from uvicorn.server import HANDLED_SIGNALS

    class GracefulServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield  # signals reach the main thread only; whoever runs us there stops us
                return
            original: dict[int, Any] = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    return GracefulServer(config)
