"""The distribution ships every subpackage, and `import overcast` stays light."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_folder_with_an_init_is_in_the_package_list() -> None:
    config = _config()
    listed = set(config["packages"])
    expected = set()
    for package, folder in config["package-dir"].items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            relative = init.parent.relative_to(base).parts
            expected.add(".".join((package, *relative)))
    # sdk/ holds overcast itself, and its sub-folders are mapped by their own entries
    missing = sorted(p for p in expected if p not in listed)
    assert not missing, (
        f"subpackages missing from [tool.setuptools] packages (they would drop out of the wheel): {missing}"
    )
    unknown = sorted(p for p in listed if p not in expected)
    assert not unknown, f"packages listed without an __init__.py: {unknown}"


def test_import_overcast_loads_no_cloud_sdk_or_web_framework() -> None:
    code = (
        "import sys, overcast, overcast.core.ports, overcast.core.settings, overcast.adapters.factory;"
        "heavy = [m for m in ('boto3', 'botocore', 's3fs', 'aiobotocore', 'fastapi', 'starlette', 'mangum')"
        " if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing overcast pulled in: {out.stdout.strip()}"


def test_the_embedded_backends_need_no_cloud_sdk(tmp_path: Path) -> None:
    code = (
        "import sys; from overcast.adapters.factory import Adapters; from overcast.core.settings import Settings;"
        f"a = Adapters(Settings(home={str(tmp_path)!r}, invoker='inline://'));"
        "a.store.put({'pk': 'p', 'sk': 's'}); a.blobs.put('k', b'v'); a.queue.send('m');"
        "print(','.join(m for m in ('boto3', 'botocore', 's3fs') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
