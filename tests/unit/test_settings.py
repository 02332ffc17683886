"""Settings: environment over defaults, explicit arguments over the environment, the embedded default."""

from __future__ import annotations

from pathlib import Path

import pytest

from overcast.adapters.factory import open_blobs, open_invoker, open_queue, open_store
from overcast.core.errors import ConfigurationError
from overcast.core.settings import BackendURL, Settings


def test_embedded_default_lives_under_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path))
    for name in ("OVERCAST_STORE", "OVERCAST_BLOBS", "OVERCAST_QUEUE", "OVERCAST_INVOKER"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.store_url == f"sqlite://{tmp_path}/overcast.db"
    assert settings.blobs_url == f"file://{tmp_path}/blobs"
    assert settings.queue_url == f"local://{tmp_path}/queue.db"
    assert settings.invoker_url == "local://"


def test_environment_and_explicit_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OVERCAST_STORE", "memory://env")
    monkeypatch.setenv("OVERCAST_FUNCTIONS", '{"runner": "pkg.mod:handler"}')
    assert Settings().store_url == "memory://env"
    assert Settings().functions == {"runner": "pkg.mod:handler"}
    assert Settings(store="memory://arg").store_url == "memory://arg"


def test_home_with_a_tilde_is_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Settings(home=Path("~/oc")).home == tmp_path / "oc"


def test_backend_urls_parse() -> None:
    url = BackendURL("dynamodb://runs?region=eu-west-1&endpoint=http://127.0.0.1:5000&create=true")
    assert (url.scheme, url.netloc) == ("dynamodb", "runs")
    assert url.param("region") == "eu-west-1" and url.param("endpoint") == "http://127.0.0.1:5000"
    assert url.param("create", False, bool) is True
    assert url.param("workers", 4, int) == 4


@pytest.mark.parametrize(
    ("opener", "url", "words"),
    [
        (open_store, "postgres://x", "unknown store backend"),
        (open_store, "sqlite://", "needs a path"),
        (open_store, "no-scheme", "no scheme"),
        (open_blobs, "ftp://x", "unknown blob backend"),
        (open_queue, "kafka://x", "unknown queue backend"),
        (open_invoker, "k8s://x", "unknown invoker backend"),
        (open_invoker, "local://?workers=many", "not a int"),
    ],
)
def test_bad_backend_urls_get_a_clear_error(opener: object, url: str, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        opener(url)  # type: ignore[operator]


def test_memory_backends_are_shared_by_name() -> None:
    a, b, c = (
        open_store("memory://shared-1"),
        open_store("memory://shared-1"),
        open_store("memory://shared-2"),
    )
    a.put({"pk": "p", "sk": "s"})
    assert b.get("p", "s") is not None and c.get("p", "s") is None
    fresh = open_store("memory://")
    assert fresh.get("p", "s") is None and fresh is not open_store("memory://")
