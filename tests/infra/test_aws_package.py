"""The Lambda code package: what goes in, what stays out, reproducible bytes, sizes and limits.

No network: pip installs from a wheelhouse of stand-in wheels made here, one for each of
Overcast's runtime pins (same names and versions, a few bytes each), plus stand-ins of the dev
tools (pytest, moto, ruff) that must stay out although pip could take them.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from overcast.infra.aws.package import (
    Package,
    PackageError,
    PackageOptions,
    PackageTooLargeError,
    build_package,
    overcast_requirements,
)

DEV_TOOLS = {"pytest": "9.2.0", "moto": "5.2.5", "ruff": "0.17.6"}


def make_wheel(where: Path, name: str, version: str, *, requires: tuple[str, ...] = ()) -> Path:
    """A minimal pure-Python wheel ``name==version`` whose module says its version."""
    dist = re.sub(r"[-_.]+", "_", name).lower()
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{dist}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
            + "".join(f"Requires-Dist: {r}\n" for r in requires)
        ).encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: overcast-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    wheel = where / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def pins() -> dict[str, str]:
    out = {}
    for requirement in overcast_requirements():
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s;]+)", requirement.strip())
        assert match, f"a runtime requirement is not an exact pin: {requirement!r}"
        out[match.group(1)] = match.group(2)
    return out


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("wheelhouse")
    for name, version in {**pins(), **DEV_TOOLS, "tinydep": "1.0"}.items():
        make_wheel(where, name, version)
    return where


@pytest.fixture(scope="module", autouse=True)
def _pip_offline() -> Iterator[None]:
    """pip sees the wheelhouse and nothing else: no config files, no index, no extra links."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIP_CONFIG_FILE", os.devnull)
        for name in list(os.environ):
            if name.startswith("PIP_") and name != "PIP_CONFIG_FILE":
                patch.delenv(name)
        yield


def make_project(root: Path) -> Path:
    (root / "helpers").mkdir(parents=True)
    (root / "flows.py").write_text("from overcast import flow\n\n@flow\ndef etl() -> int:\n    return 1\n")
    (root / "helpers" / "__init__.py").write_text("")
    (root / "helpers" / "util.py").write_text("def double(x):\n    return 2 * x\n")
    (root / "data").mkdir()
    (root / "data" / "sample.csv").write_text("a,b\n1,2\n")
    (root / "requirements.txt").write_text("tinydep==1.0\n")
    # what must stay out
    (root / ".env").write_text("SECRET=1\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "flows.cpython-312.pyc").write_bytes(b"\x00")
    (root / "venv" / "lib").mkdir(parents=True)
    (root / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (root / "venv" / "lib" / "big.py").write_text("x = 1\n")
    (root / "scratch").mkdir()
    (root / "scratch" / "notes.txt").write_text("left out by --exclude\n")
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("project"))


@pytest.fixture(scope="module")
def package(project: Path, wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Package:
    options = PackageOptions(project, wheelhouse=wheelhouse, no_download=True, exclude=("scratch",))
    return build_package(options, tmp_path_factory.mktemp("out"))


def names(package: Package) -> set[str]:
    with zipfile.ZipFile(package.path) as archive:
        return set(archive.namelist())


def test_overcast_needs_its_aws_and_api_extras_and_none_of_its_dev_tools() -> None:
    wanted = {name.lower() for name in pins()}
    assert {"boto3", "s3fs", "fastapi", "mangum", "pydantic"} <= wanted
    assert not wanted & {"pytest", "moto", "ruff", "mypy", "schemathesis", "cfn-lint"}


def test_the_package_holds_the_project_overcast_and_the_runtime_dependencies(package: Package) -> None:
    inside = names(package)
    # the project, at the root (Lambda's /var/task)
    assert {"flows.py", "helpers/util.py", "helpers/__init__.py", "data/sample.csv"} <= inside
    # Overcast's runtime, not its CLI
    assert {"overcast/__init__.py", "overcast/handlers/aws/runner.py", "overcast/core/keys.py"} <= inside
    assert {"overcast/adapters/kv/dynamodb.py", "overcast/handlers/aws/events.py"} <= inside
    assert not any(n.startswith("overcast/infra/") for n in inside)
    # every runtime pin, the project's own requirement, and nothing else
    expected = {f"{name.lower()}=={version}" for name, version in pins().items()} | {"tinydep==1.0"}
    assert {d.lower() for d in package.distributions} == expected
    assert "tinydep/__init__.py" in inside


def test_dev_tools_hidden_files_caches_and_virtualenvs_stay_out(package: Package) -> None:
    inside = names(package)
    for tool in DEV_TOOLS:
        assert not any(n.split("/")[0].split("-")[0] == tool for n in inside), tool
    assert not any(n.startswith((".env", ".git/", "venv/", "scratch/", "bin/")) for n in inside)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in inside)


def test_the_same_inputs_give_the_same_bytes(
    package: Package, project: Path, wheelhouse: Path, tmp_path: Path
) -> None:
    for path in project.rglob("*"):  # new timestamps change nothing
        os.utime(path, (1_700_000_000, 1_700_000_000))
    again = build_package(
        PackageOptions(project, wheelhouse=wheelhouse, no_download=True, exclude=("scratch",)), tmp_path
    )
    assert again.sha256 == package.sha256
    assert again.path.read_bytes() == package.path.read_bytes()
    assert again.name == package.name == f"overcast-{package.sha256[:20]}.zip"
    with zipfile.ZipFile(again.path) as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}


def test_a_changed_file_changes_the_hash(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    first = build_package(PackageOptions(project, dependencies=False), tmp_path / "one")
    (project / "flows.py").write_text("# changed\n")
    second = build_package(PackageOptions(project, dependencies=False), tmp_path / "two")
    assert first.sha256 != second.sha256
    assert first.distributions == second.distributions == ()  # code only: no dependencies


def test_sizes_are_reported_and_lambdas_limit_enforced(
    package: Package, project: Path, wheelhouse: Path, tmp_path: Path
) -> None:
    assert package.zipped_bytes == package.path.stat().st_size
    assert 0 < package.zipped_bytes < package.unzipped_bytes
    assert package.unzipped_bytes == sum(package.sizes.values())
    assert package.largest(1)[0][0] == "overcast"  # the stand-in wheels are tiny
    assert "MB zipped" in package.summary()
    assert "of Lambda's 250.0 MB" in package.summary()

    with pytest.raises(PackageTooLargeError) as caught:
        build_package(PackageOptions(project, dependencies=False, limit=100_000), tmp_path)
    assert caught.value.limit == 100_000
    assert caught.value.largest[0][0] == "overcast"
    assert "over Lambda's limit" in str(caught.value)
    assert not list(tmp_path.glob("*.zip"))


def test_a_requirement_pip_cannot_find_is_reported(tmp_path: Path, wheelhouse: Path) -> None:
    project = make_project(tmp_path / "project")
    (project / "requirements.txt").write_text("not-in-the-wheelhouse==1.0\n")
    with pytest.raises(PackageError, match="not-in-the-wheelhouse"):
        build_package(PackageOptions(project, wheelhouse=wheelhouse, no_download=True), tmp_path / "out")


def test_a_project_entry_named_like_an_installed_package_is_refused(tmp_path: Path, wheelhouse: Path) -> None:
    project = make_project(tmp_path / "project")
    (project / "boto3").mkdir()
    (project / "boto3" / "__init__.py").write_text("")
    with pytest.raises(PackageError, match="'boto3' clashes"):
        build_package(PackageOptions(project, wheelhouse=wheelhouse, no_download=True), tmp_path / "out")


def test_wheels_are_asked_for_the_runtimes_glibc_and_architecture(tmp_path: Path) -> None:
    x86 = PackageOptions(tmp_path).platforms()
    assert x86[0] == "manylinux_2_34_x86_64"  # python3.12 runs on Amazon Linux 2023
    assert {"manylinux_2_17_x86_64", "manylinux2014_x86_64"} <= set(x86)
    arm = PackageOptions(tmp_path, runtime="python3.11", architecture="arm64").platforms()
    assert arm[0] == "manylinux_2_26_aarch64"  # python3.11 runs on Amazon Linux 2
    assert all(tag.endswith("aarch64") for tag in arm)
    with pytest.raises(PackageError, match=r"python3\.9"):
        PackageOptions(tmp_path, runtime="python3.9")
    with pytest.raises(PackageError, match="wheelhouse"):
        PackageOptions(tmp_path, no_download=True)
