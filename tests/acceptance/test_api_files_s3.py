"""The same file routes and task outputs with the blobs in an S3 bucket (moto's
server mode on 127.0.0.1): nothing is kept on the local disk but scratch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests import filesamples
from tests.acceptance.apitools import (
    assert_error,
    json_of,
    module_server,
    quick_account,
    submit,
    wait_status,
)
from tests.databases import Backend
from tests.helpers import ServerProcess
from tests.s3server import S3Server, running_s3

pytestmark = pytest.mark.acceptance

PREFIX = "tg/blobs"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with running_s3() as server:
        yield server


@pytest.fixture(scope="module")
def bucket(s3: S3Server) -> str:
    return s3.new_bucket()


@pytest.fixture(scope="module")
def srv(
    tmp_path_factory: pytest.TempPathFactory, backend: Backend, s3: S3Server, bucket: str
) -> Iterator[ServerProcess]:
    yield from module_server(tmp_path_factory, backend, env=s3.env(bucket, PREFIX))


def _objects(s3: S3Server, bucket: str) -> dict[str, bytes]:
    client = s3.client()
    listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {
        item["Key"]: client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        for item in listed
    }


def test_files_and_outputs_live_in_the_bucket(
    srv: ServerProcess, s3: S3Server, bucket: str
) -> None:
    account = quick_account(srv.data_dir, "s3")
    picture = filesamples.image("png", 50, 40)
    with srv.client(account.key) as http:
        body = json_of(
            http.post("/v1/files", files={"file": ("p.png", picture)}, data={"purpose": "input"}),
            201,
        )
        file_id = body["id"]
        assert _objects(s3, bucket)[f"{PREFIX}/files/{file_id}"] == picture
        assert http.get(f"/v1/files/{file_id}/content").content == picture
        ranged = http.get(f"/v1/files/{file_id}/content", headers={"Range": "bytes=4-11"})
        assert ranged.status_code == 206 and ranged.content == picture[4:12]
        assert ranged.headers["content-range"] == f"bytes 4-11/{len(picture)}"

        task = submit(http, "copy-files", input={"source": file_id})
        done = wait_status(http, task["id"], {"completed", "failed"})
        assert done["status"] == "completed", done["error"]
        item: dict[str, Any] = next(o for o in done["output"] if "file_id" in o)
        assert (item["type"], item["width"], item["height"]) == ("image", 50, 40)
        assert httpx.get(item["url"]).content == picture
        assert _objects(s3, bucket)[f"{PREFIX}/files/{item['file_id']}"] == picture

        assert json_of(http.delete(f"/v1/tasks/{task['id']}"), 200)["deleted"] is True
        assert json_of(http.delete(f"/v1/files/{file_id}"), 200)["deleted"] is True
        assert _objects(s3, bucket) == {}
        assert_error(http.get(f"/v1/files/{file_id}/content"), 404, "file_not_found")
    # Blobs never landed on the local disk.
    assert not (srv.data_dir / "blobs" / "files").exists()
    assert list((srv.data_dir / "tmp").iterdir()) == []


def test_refused_upload_leaves_no_object(srv: ServerProcess, s3: S3Server, bucket: str) -> None:
    account = quick_account(srv.data_dir, "s3-bad")
    before = _objects(s3, bucket)
    with srv.client(account.key) as http:
        response = http.post(
            "/v1/files", files={"file": ("x.png", b"\x89PNG\r\n\x1a\n" + b"z" * 64)}
        )
        assert_error(response, 422, "invalid_file")
    assert _objects(s3, bucket) == before
