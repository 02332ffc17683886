"""The functions' code package: one zip for all four functions, built reproducibly.

Layout, at the zip's root (Lambda's ``/var/task``, which is on ``sys.path``):

- the runtime dependencies of Overcast's ``aws`` and ``api`` extras (and the project's own
  ``requirements.txt``), installed by pip as manylinux wheels for the target runtime and
  architecture (``--platform``/``--python-version``/``--only-binary=:all:``: nothing is
  compiled here); the ``dev`` extra is never asked for;
- Overcast's runtime packages (``overcast``, ``overcast.core``, ``overcast.adapters``,
  ``overcast.handlers``; not the CLI in ``overcast.infra``), copied from where this Overcast
  is imported from;
- the project's files (hidden files and directories, virtual environments, caches and
  compiled files left out), so that a deployment's entrypoint ``flows.py:etl`` is
  ``/var/task/flows.py``.

The zip is deterministic: entries sorted, timestamps fixed, modes normalized. The same inputs
give the same bytes, so the same hash; the hash names the S3 key, and a deploy with nothing
changed changes nothing.

Overcast's pins come from the checkout's ``pyproject.toml`` (and ``.ci/requirements.lock`` as
constraints) when this Overcast runs from a source checkout, else from the installed
distribution's metadata.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import importlib.metadata
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from overcast.core.errors import OvercastError

LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
"""Lambda's limit on a function's unzipped code, layers included (262,144,000 bytes)."""
LAMBDA_DIRECT_UPLOAD_LIMIT = 50 * 1024 * 1024
"""Lambda's limit on a zip uploaded directly; through S3 (as here) only the unzipped limit holds."""

RUNTIME_EXTRAS = ("aws", "api")
"""Overcast's extras the functions need: boto3/s3fs for the backends, FastAPI/Mangum for the API."""

# glibc of the Lambda runtimes' Amazon Linux (python3.11: AL2; python3.12+: AL2023)
_GLIBC_MINOR = {"python3.11": 26, "python3.12": 34, "python3.13": 34}
_ARCH = {"x86_64": "x86_64", "arm64": "aarch64"}
_RUNTIME_PACKAGES = ("overcast", "overcast.core", "overcast.adapters", "overcast.handlers")
_SKIPPED_DIRS = {"__pycache__", "node_modules"}
_SKIPPED_SUFFIXES = (".pyc", ".pyo")
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say


class PackageError(OvercastError):
    """Raised when the package cannot be built (pip failed, a file clashes, an option is wrong)."""


class PackageTooLargeError(PackageError):
    """Raised when the unzipped package is over Lambda's limit.

    Attributes:
        size: the unzipped size in bytes.
        limit: the limit.
        largest: the biggest top-level entries, (name, bytes), largest first.
    """

    def __init__(self, size: int, limit: int, largest: list[tuple[str, int]]) -> None:
        self.size = size
        self.limit = limit
        self.largest = largest
        biggest = ", ".join(f"{name} {_mb(n)}" for name, n in largest[:5])
        super().__init__(
            f"the package is {_mb(size)} unzipped, over Lambda's limit of {_mb(limit)} "
            f"(largest: {biggest}); leave out what the functions do not need"
        )


@dataclass(frozen=True)
class PackageOptions:
    """What goes into the package, and for which Lambda runtime.

    Attributes:
        project: the project directory (its files go to the zip's root).
        runtime: the Lambda runtime (``python3.11``, ``python3.12``, ``python3.13``).
        architecture: ``x86_64`` or ``arm64``.
        dependencies: install the runtime dependencies (``False``: project and Overcast only,
            for tests or when a layer brings the rest).
        requirements: the project's own requirements file (default: ``requirements.txt`` in
            the project, when there is one).
        wheelhouse: a directory of wheels pip may take from (``--find-links``).
        no_download: take wheels from the wheelhouse only, never from an index (``--no-index``).
        constraints: a pip constraints file (default: the checkout's lock, when running from one).
        exclude: glob patterns of project paths to leave out (relative, ``/``-separated).
        limit: the largest unzipped size allowed.
    """

    project: Path
    runtime: str = "python3.12"
    architecture: str = "x86_64"
    dependencies: bool = True
    requirements: Path | None = None
    wheelhouse: Path | None = None
    no_download: bool = False
    constraints: Path | None = None
    exclude: tuple[str, ...] = ()
    limit: int = LAMBDA_UNZIPPED_LIMIT

    def __post_init__(self) -> None:
        if self.runtime not in _GLIBC_MINOR:
            raise PackageError(f"runtime {self.runtime!r} is not one of {', '.join(_GLIBC_MINOR)}")
        if self.architecture not in _ARCH:
            raise PackageError(f"architecture {self.architecture!r} is not one of {', '.join(_ARCH)}")
        if self.no_download and self.wheelhouse is None:
            raise PackageError("no_download needs a wheelhouse to take the wheels from")

    @property
    def python_version(self) -> str:
        """``3.12`` for ``python3.12``."""
        return self.runtime.removeprefix("python")

    def platforms(self) -> list[str]:
        """pip's ``--platform`` tags for the runtime's glibc and architecture, newest first."""
        arch = _ARCH[self.architecture]
        tags = [f"manylinux_2_{minor}_{arch}" for minor in range(_GLIBC_MINOR[self.runtime], 16, -1)]
        return [*tags, f"manylinux2014_{arch}"]  # pip also reads the legacy spelling of 2_17


@dataclass(frozen=True)
class Package:
    """A built package.

    Attributes:
        path: the zip.
        sha256: the zip's SHA-256 (hex).
        zipped_bytes: the zip's size.
        unzipped_bytes: the size of what it holds.
        files: how many files it holds.
        distributions: the installed distributions, ``name==version``, sorted.
        sizes: unzipped bytes per top-level entry.
    """

    path: Path
    sha256: str
    zipped_bytes: int
    unzipped_bytes: int
    files: int
    distributions: tuple[str, ...] = ()
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The zip's name, which carries its hash (``overcast-<hash>.zip``)."""
        return f"overcast-{self.sha256[:20]}.zip"

    def largest(self, count: int = 5) -> list[tuple[str, int]]:
        """The ``count`` biggest top-level entries, (name, unzipped bytes), largest first."""
        return sorted(self.sizes.items(), key=lambda item: (-item[1], item[0]))[:count]

    def summary(self) -> str:
        """One line: sizes against Lambda's limit, file count."""
        share = 100 * self.unzipped_bytes / LAMBDA_UNZIPPED_LIMIT
        return (
            f"{self.name}: {_mb(self.zipped_bytes)} zipped, {_mb(self.unzipped_bytes)} unzipped "
            f"({share:.0f}% of Lambda's {_mb(LAMBDA_UNZIPPED_LIMIT)}), {self.files} files, "
            f"{len(self.distributions)} distributions"
        )


def build_package(options: PackageOptions, out_dir: Path) -> Package:
    """Build the package into ``out_dir`` (created if needed) and return it.

    Raises:
        PackageError: pip failed, or a project file clashes with an installed package.
        PackageTooLargeError: the result is over ``options.limit`` unzipped.
    """
    project = options.project.resolve()
    if not project.is_dir():
        raise PackageError(f"project directory {project} does not exist")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="overcast-package-") as tmp:
        stage = Path(tmp) / "stage"
        stage.mkdir()
        if options.dependencies:
            _install(options, project, stage, Path(tmp))
        distributions = _distributions(stage)
        entries = _collect(stage, project, options.exclude, out_dir.resolve())
        unzipped = sum(path.stat().st_size for path in entries.values())
        sizes: dict[str, int] = {}
        for arcname, path in entries.items():
            top = arcname.split("/", 1)[0]
            sizes[top] = sizes.get(top, 0) + path.stat().st_size
        if unzipped > options.limit:
            largest = sorted(sizes.items(), key=lambda item: -item[1])
            raise PackageTooLargeError(unzipped, options.limit, largest)
        scratch = out_dir / ".overcast-package.zip.partial"
        write_zip(entries, scratch)
    sha256 = _sha256(scratch)
    package = Package(
        path=out_dir / f"overcast-{sha256[:20]}.zip",
        sha256=sha256,
        zipped_bytes=scratch.stat().st_size,
        unzipped_bytes=unzipped,
        files=len(entries),
        distributions=distributions,
        sizes=sizes,
    )
    scratch.replace(package.path)
    return package


def write_zip(entries: dict[str, Path], target: Path) -> None:
    """Zip ``entries`` (name in the zip -> file) deterministically: sorted, fixed times and modes."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for arcname in sorted(entries):
            path = entries[arcname]
            info = zipfile.ZipInfo(arcname, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, so that the mode below is read
            executable = path.stat().st_mode & stat.S_IXUSR
            info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
            info.file_size = path.stat().st_size
            with path.open("rb") as source, archive.open(info, "w") as sink:
                shutil.copyfileobj(source, sink, 1024 * 1024)


# -- what Overcast needs ------------------------------------------------------------------------


def overcast_requirements(extras: Sequence[str] = RUNTIME_EXTRAS) -> list[str]:
    """Overcast's own requirements with ``extras`` (pinned), as pip requirement strings."""
    checkout = source_checkout()
    if checkout is not None:
        project = tomllib.loads((checkout / "pyproject.toml").read_text())["project"]
        wanted = list(project.get("dependencies", []))
        for extra in extras:
            wanted += project.get("optional-dependencies", {}).get(extra, [])
        return [r for r in wanted if not _is_overcast(r)]
    requires = importlib.metadata.requires("overcast") or []
    out = []
    for requirement in requires:
        spec, _, marker = requirement.partition(";")
        named = re.search(r"""extra\s*==\s*['"]([^'"]+)['"]""", marker)
        if (named is None or named.group(1) in extras) and not _is_overcast(spec):
            out.append(spec.strip() if named else requirement.strip())
    return out


def source_checkout() -> Path | None:
    """The source checkout this Overcast runs from (an editable install), or ``None``."""
    import overcast

    root = Path(overcast.__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        return None
    try:
        name = tomllib.loads(pyproject.read_text()).get("project", {}).get("name")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return root if name == "overcast" else None


def default_constraints() -> Path | None:
    """The checkout's lock file (the pins Overcast is tested with), when running from a checkout."""
    checkout = source_checkout()
    lock = checkout / ".ci" / "requirements.lock" if checkout else None
    return lock if lock is not None and lock.is_file() else None


def _is_overcast(requirement: str) -> bool:
    return re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0].lower() == "overcast"


def _install(options: PackageOptions, project: Path, stage: Path, tmp: Path) -> None:
    requirements = tmp / "requirements.txt"
    lines = overcast_requirements()
    own = options.requirements or (project / "requirements.txt")
    if options.requirements is not None and not own.is_file():
        raise PackageError(f"requirements file {own} does not exist")
    if own.is_file():
        lines.append(f"-r {own.resolve()}")
    requirements.write_text("\n".join(lines) + "\n")
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
        "--no-compile",  # bytecode for another Python would be ignored anyway
        "--target",
        str(stage),
        "--implementation",
        "cp",
        "--python-version",
        options.python_version,
        "--only-binary=:all:",
        "-r",
        str(requirements),
    ]
    for platform in options.platforms():
        command += ["--platform", platform]
    constraints = options.constraints or default_constraints()
    if constraints is not None:
        command += ["-c", str(constraints)]
    if options.wheelhouse is not None:
        command += ["--find-links", str(options.wheelhouse.resolve())]
    if options.no_download:
        command.append("--no-index")
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip().splitlines()
        raise PackageError(
            f"pip could not install the dependencies for {options.runtime} on {options.architecture}:\n"
            + "\n".join(output[-25:])
        )
    shutil.rmtree(stage / "bin", ignore_errors=True)  # console scripts, with this machine's shebang


def _distributions(stage: Path) -> tuple[str, ...]:
    found = []
    for meta in stage.glob("*.dist-info/METADATA"):
        headers = dict(
            line.split(": ", 1) for line in meta.read_text(errors="replace").splitlines()[:20] if ": " in line
        )
        found.append(f"{headers.get('Name', meta.parent.name)}=={headers.get('Version', '?')}")
    return tuple(sorted(found, key=str.lower))


# -- what goes into the zip ---------------------------------------------------------------------


def _collect(stage: Path, project: Path, exclude: Iterable[str], out_dir: Path) -> dict[str, Path]:
    entries = {arc: path for arc, path in _walk(stage, ()) if not arc.startswith("overcast/")}
    for arcname, path in overcast_files().items():
        entries[arcname] = path  # ours, over any overcast a requirement may have pulled in
    installed = {arc.split("/", 1)[0] for arc in entries}
    patterns = tuple(exclude)
    for arcname, path in _walk(project, patterns):
        if path.is_relative_to(out_dir):
            continue
        top = arcname.split("/", 1)[0]
        if top in installed:
            raise PackageError(
                f"project entry {top!r} clashes with an installed package of the same name; rename it"
            )
        entries[arcname] = path
    return entries


def overcast_files() -> dict[str, Path]:
    """Overcast's runtime modules: name in the zip -> file (``overcast/...``; no ``overcast/infra``)."""
    files: dict[str, Path] = {}
    for name in _RUNTIME_PACKAGES:
        module = importlib.import_module(name)
        root = Path(module.__file__ or "").parent
        prefix = name.replace(".", "/")
        for arcname, path in _walk(root, ()):
            full = f"{prefix}/{arcname}"
            if full.startswith("overcast/infra/"):
                continue
            if path.suffix == ".py" or path.name == "py.typed":
                files.setdefault(full, path)
    return files


def _walk(root: Path, exclude: tuple[str, ...]) -> Iterator[tuple[str, Path]]:
    """Files under ``root`` (sorted), as (``/``-separated relative name, path), minus the skipped."""
    for directory, dirnames, filenames in os.walk(root):
        here = Path(directory)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not _skipped(d)
            and not (here / d / "pyvenv.cfg").exists()
            and not _excluded((here / d).relative_to(root).as_posix(), exclude)
        )
        for filename in sorted(filenames):
            path = here / filename
            arcname = path.relative_to(root).as_posix()
            if _skipped(filename) or filename.endswith(_SKIPPED_SUFFIXES) or _excluded(arcname, exclude):
                continue
            if path.is_file():
                yield arcname, path


def _skipped(name: str) -> bool:
    return name.startswith(".") or name in _SKIPPED_DIRS


def _excluded(arcname: str, patterns: tuple[str, ...]) -> bool:
    return any(
        fnmatch.fnmatchcase(arcname, p) or fnmatch.fnmatchcase(arcname, p.rstrip("/") + "/*")
        for p in patterns
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for block in iter(lambda: source.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"
