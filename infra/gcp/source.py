"""The source archive Cloud Functions builds: your project, Overcast, a ``requirements.txt``, ``main.py``.

Cloud Functions (2nd gen) builds a Python function from a zip of its source: it installs
``requirements.txt`` with pip and serves ``main.py``'s entry point under functions-framework.
The archive holds:

- your project's files (the folder you deploy from: the flows your deployments' entrypoints
  name), minus caches, virtual environments and VCS folders;
- Overcast's own code as an ``overcast/`` package, copied from the installed distribution, so
  the functions run the Overcast you run (a development checkout included);
- ``requirements.txt``: Overcast's runtime dependencies at the versions it pins, with the
  ``api`` and ``gcp`` extras (and ``aws`` when the store or blobs are on AWS), then your
  project's own ``requirements.txt`` lines;
- ``main.py``: one name per entry point (``api``, ``storage``, ``runner``, ``tick``), each
  imported from ``overcast.handlers.gcp`` on first use, so a function loads its handler only.

The archive is byte-for-byte reproducible (sorted entries, fixed timestamps and modes), and its
``digest`` covers the files' names and contents: the same project gives the same digest, which
is how a second deploy with nothing changed knows to change nothing.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import os
import re
import tomllib
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from overcast.core.errors import ConfigurationError

ENTRY_POINTS: dict[str, tuple[str, str]] = {
    "api": ("overcast.handlers.gcp.api", "http"),
    "storage": ("overcast.handlers.gcp.events", "cloudevent"),
    "runner": ("overcast.handlers.gcp.runner", "cloudevent"),
    "tick": ("overcast.handlers.gcp.tick", "http"),
}
"""Entry point name → (module defining it, functions-framework signature type)."""

# the parts of Overcast a function imports (the CLI and the local stack, in overcast.infra, stay out)
PACKAGES = ("overcast", "overcast.core", "overcast.adapters", "overcast.handlers")
PARTS = (*PACKAGES, "overcast.infra")  # the folders pyproject.toml's package-dir maps
EXTRAS = ("api", "gcp")
MAX_ARCHIVE_BYTES = 100 * 1024 * 1024  # Cloud Functions refuses larger source uploads

SKIPPED_DIRS = frozenset(
    {".git", ".hg", ".svn", ".venv", "venv", "__pycache__", ".mypy_cache", ".pytest_cache",
     ".ruff_cache", ".tox", ".nox", "node_modules", ".idea", ".vscode", ".overcast"}
)  # fmt: skip
SKIPPED_SUFFIXES = (".pyc", ".pyo")
GENERATED = ("main.py", "requirements.txt")
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry

MAIN_PY = '''\
"""Overcast's Cloud Functions entry points (written by `overcast deploy gcp`; do not edit).

functions-framework serves the name a function's entry point gives; each is imported from
overcast.handlers.gcp on first use, so that a function loads its own handler only.
"""

import importlib

ENTRY_POINTS = {
%s}

__all__ = list(ENTRY_POINTS)


def __getattr__(name):
    if name not in ENTRY_POINTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(ENTRY_POINTS[name]), name)
'''


@dataclass(frozen=True)
class SourceArchive:
    """A built source archive.

    Attributes:
        data: the zip file's bytes.
        digest: a SHA-256 (hex) of the files' names and contents.
        names: the archive's file names, sorted.
    """

    data: bytes
    digest: str
    names: tuple[str, ...]


def build_source(project: Path, *, extras: Iterable[str] = ()) -> SourceArchive:
    """Build the source archive of ``project`` (see the module docstring).

    Args:
        project: your project's folder.
        extras: Overcast extras to install besides ``api`` and ``gcp`` (``aws`` for a DynamoDB
            store or S3 blobs).

    Raises:
        ConfigurationError: ``project`` is not a folder, has its own ``main.py`` or ``overcast``
            package (the archive's would replace them), or the archive is too large.
    """
    project = project.resolve()
    if not project.is_dir():
        raise ConfigurationError(f"project folder {project} does not exist")
    for taken in ("main.py", "overcast"):
        if (project / taken).exists():
            raise ConfigurationError(
                f"{project / taken} would be replaced by Overcast's own in the functions' source; "
                "rename it, or deploy from a folder without it"
            )
    files: dict[str, bytes] = {}
    user_requirements = ""
    for name, path in _project_files(project):
        if name == "requirements.txt":
            user_requirements = path.read_text()
        else:
            files[name] = path.read_bytes()
    for name, path in _overcast_files():
        files[name] = path.read_bytes()
    files["requirements.txt"] = requirements(extras, user_requirements).encode()
    files["main.py"] = main_py().encode()
    return _zip(files)


def requirements(extras: Iterable[str] = (), user_requirements: str = "") -> str:
    """The ``requirements.txt`` text: Overcast's pinned runtime dependencies, then the user's.

    Raises:
        ConfigurationError: Overcast is not installed as a distribution (no metadata to read).
    """
    wanted = set(EXTRAS) | set(extras)
    base, optional = _declared_dependencies()
    lines = [
        f"# Overcast's dependencies, extras {', '.join(sorted(wanted))} (written by overcast deploy gcp)"
    ]
    lines += base
    for extra in sorted(wanted):
        lines += optional.get(extra, [])
    if user_requirements.strip():
        lines += ["", "# your project's requirements.txt", user_requirements.strip()]
    return "\n".join(lines) + "\n"


def main_py() -> str:
    """The ``main.py`` text: each entry point by name, imported lazily."""
    table = "".join(f"    {name!r}: {module!r},\n" for name, (module, _) in ENTRY_POINTS.items())
    return MAIN_PY % table


_EXTRA_MARKER = re.compile(r"""^extra\s*==\s*["']([^"']+)["']$""")


def _declared_dependencies() -> tuple[list[str], dict[str, list[str]]]:
    """Overcast's dependencies and each extra's: from the checkout Overcast is imported from
    (an editable install, whose metadata is frozen when it was installed), else from the
    installed distribution's metadata."""
    pyproject = _checkout_pyproject()
    if pyproject is not None:
        return list(pyproject.get("dependencies", [])), {
            extra: list(specs) for extra, specs in pyproject.get("optional-dependencies", {}).items()
        }
    try:
        declared = importlib.metadata.requires("overcast") or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise ConfigurationError(
            "Overcast is not installed (pip install overcast): its dependencies cannot be listed"
        ) from exc
    base: list[str] = []
    optional: dict[str, list[str]] = {}
    for spec in declared:
        requirement, _, marker = (part.strip() for part in spec.partition(";"))
        if "extra" not in marker:
            base.append(f"{requirement}; {marker}" if marker else requirement)
        elif match := _EXTRA_MARKER.match(marker):
            optional.setdefault(match.group(1), []).append(requirement)
        else:
            raise ConfigurationError(f"cannot read the requirement {spec!r} of Overcast's metadata")
    return base, optional


def _checkout_pyproject() -> dict[str, Any] | None:
    """The ``[project]`` table of the checkout ``overcast`` is imported from, if it is one."""
    spec = importlib.util.find_spec("overcast")
    if spec is None or spec.origin is None:
        return None
    package = Path(spec.origin).parent
    path = package.parent / "pyproject.toml"
    if not path.is_file():
        return None
    document = tomllib.loads(path.read_text())
    project: dict[str, Any] = document.get("project", {})
    package_dir = document.get("tool", {}).get("setuptools", {}).get("package-dir", {})
    if project.get("name") != "overcast" or package_dir.get("overcast") != package.name:
        return None
    return project


def _project_files(project: Path) -> Iterator[tuple[str, Path]]:
    for folder, dirs, names in os.walk(project):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info"))
        for name in names:
            path = Path(folder) / name
            if name.endswith(SKIPPED_SUFFIXES) or not path.is_file():
                continue
            yield path.relative_to(project).as_posix(), path


def _overcast_files() -> Iterator[tuple[str, Path]]:
    # Each part is found where Python imports it from: in a wheel install the parts nest under
    # one folder; in an editable install each is its repository folder (sdk/, core/ …).
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigurationError(f"cannot find Overcast's package {package} to copy into the source")
        root = Path(next(iter(spec.submodule_search_locations)))
        prefix = package.replace(".", "/")
        for folder, dirs, names in os.walk(root):
            here = Path(folder)
            dotted = ".".join((package, *here.relative_to(root).parts))
            # a sub-folder is a subpackage of this part, or a part of its own (copied on its turn)
            dirs[:] = sorted(
                d for d in dirs if (here / d / "__init__.py").is_file() and f"{dotted}.{d}" not in PARTS
            )
            for name in names:
                if name.endswith(SKIPPED_SUFFIXES) or name.startswith("."):
                    continue
                yield f"{prefix}/{(here / name).relative_to(root).as_posix()}", here / name


def _zip(files: dict[str, bytes]) -> SourceArchive:
    digest = hashlib.sha256()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            content = files[name]
            digest.update(f"{name}\0{len(content)}\0".encode())
            digest.update(content)
            entry = zipfile.ZipInfo(name, date_time=_EPOCH)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, content)
    data = buffer.getvalue()
    if len(data) > MAX_ARCHIVE_BYTES:
        raise ConfigurationError(
            f"the source archive is {len(data) / 2**20:.0f} MiB; Cloud Functions takes at most "
            f"{MAX_ARCHIVE_BYTES // 2**20} MiB (leave data files out of the project folder)"
        )
    return SourceArchive(data, digest.hexdigest(), tuple(sorted(files)))
