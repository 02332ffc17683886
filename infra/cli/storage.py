"""``overcast upload FILE s3://BUCKET/KEY``: put a file into a bucket, as a storage trigger sees it.

Where it goes is the settings' choice, as for every other command:

- with ``OVERCAST_API_URL`` (a running ``overcast dev`` or server), through the API's
  ``PUT /api/storage/BUCKET/KEY``, into the buckets the API was configured with (the local
  buckets of ``overcast dev``, announced at once; or S3, which announces it itself);
- otherwise straight into the buckets ``OVERCAST_BUCKETS`` names: by default the local bucket
  directories under the home, where a running ``overcast dev`` sees the new file; with
  ``s3://?endpoint=URL`` (what ``overcast dev --aws-emulator`` prints), S3 through the S3 adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from overcast.infra.cli.runs import _fail

if TYPE_CHECKING:
    import httpx2


def register(app: typer.Typer) -> None:
    """Add ``upload`` to the root app."""
    app.command("upload")(upload)


def upload(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The file to upload.")
    ],
    target: Annotated[
        str,
        typer.Argument(help="s3://BUCKET/KEY; a KEY ending in '/' (or none) gets the file's name appended."),
    ],
) -> None:
    """Upload FILE to a bucket: the upload becomes an aws.s3.object.created event."""
    from overcast.adapters.factory import validate_bucket_name
    from overcast.core.blobkeys import validate_blob_key
    from overcast.core.errors import OvercastError
    from overcast.core.settings import Settings

    try:
        bucket, key = split_target(target, file.name)
        validate_bucket_name(bucket)
        validate_blob_key(key)
        settings = Settings()
        data = file.read_bytes()
        if settings.api_url:
            where = _through_api(settings.api_url, settings.api_key, bucket, key, data)
        else:
            where = _direct(settings.buckets_url, bucket, key, data)
    except (OvercastError, ValueError) as exc:
        _fail(f"cannot upload {file} to {target}: {exc}")
        return
    except OSError as exc:
        _fail(f"cannot upload {file} to {target}: {exc.strerror or exc}")
        return
    typer.echo(f"uploaded {file} to s3://{bucket}/{key} ({len(data)} bytes){where}")


def split_target(target: str, file_name: str) -> tuple[str, str]:
    """Return the bucket and key of ``s3://BUCKET/KEY`` (taken literally: no URL decoding, as the AWS CLI).

    Raises:
        ValueError: ``target`` is not an ``s3://`` URL with a bucket.
    """
    scheme, sep, rest = target.partition("://")
    if not sep or scheme != "s3":
        raise ValueError("the target must be s3://BUCKET/KEY")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError("the target names no bucket: s3://BUCKET/KEY")
    if not key or key.endswith("/"):
        key += file_name
    return bucket, key


def _through_api(api_url: str, api_key: str, bucket: str, key: str, data: bytes) -> str:
    from urllib.parse import quote

    import httpx2

    from overcast.core.errors import BackendError, ConfigurationError

    base = api_url.rstrip("/").removesuffix("/api")
    url = f"{base}/api/storage/{quote(bucket, safe='')}/{quote(key, safe='/')}"
    headers = {"Content-Type": "application/octet-stream"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    try:
        response = httpx2.put(url, content=data, headers=headers, timeout=httpx2.Timeout(300.0, connect=5.0))
    except httpx2.TransportError as exc:
        raise BackendError(f"the Overcast API at {base} is unreachable: {exc}") from exc
    if response.status_code in (401, 403):
        raise ConfigurationError(f"the API refused the key ({response.status_code}): set OVERCAST_API_KEY")
    if response.status_code >= 400:
        raise BackendError(f"the API answered {response.status_code}: {_detail(response)}")
    return f" through {base}"


def _detail(response: httpx2.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text
    if isinstance(detail, list):  # validation errors: one line per problem
        return "; ".join(str(problem.get("msg")) for problem in detail if isinstance(problem, dict))
    return str(detail)


def _direct(buckets_url: str, bucket: str, key: str, data: bytes) -> str:
    from overcast.adapters.factory import open_bucket
    from overcast.core.errors import InvalidKeyError
    from overcast.core.settings import BackendURL
    from overcast.infra.local_bucket import is_temporary

    where = BackendURL(buckets_url)
    if where.scheme == "file" and is_temporary(key):
        raise InvalidKeyError(key, "local buckets take such names for partial files and ignore them")
    open_bucket(buckets_url, bucket).put(key, data)
    if where.scheme == "file":
        path = where.require_path() / bucket / key
        return f"\n  into {path}: a running `overcast dev` announces it"
    return ""
