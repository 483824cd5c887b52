"""Files in tasks over real HTTP: inputs by id or URL, outputs with signed links,
files kept alive by live tasks, deleting a task with its files, and retention."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests import filesamples
from tests.acceptance.apitools import (
    Account,
    assert_error,
    cancel_quietly,
    json_of,
    module_server,
    parse_time,
    quick_account,
    sql,
    submit,
    upload,
    wait_status,
)
from tests.databases import Backend
from tests.helpers import ServerProcess, free_port, wait_until

pytestmark = pytest.mark.acceptance

MAX_UPLOAD = 1024 * 1024
UNKNOWN = "file_01J0000000000000000000000Z"
ADMIN_TOKEN = "admin-token-for-retention-tests"


class Origin:
    """A plain HTTP server on 127.0.0.1 serving the bytes its test puts at a path."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes]] = {}
        self.hits: dict[str, int] = {}
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                origin.hits[self.path] = origin.hits.get(self.path, 0) + 1
                status, body = origin.routes.get(self.path, (404, b"not here"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def put(self, path: str, body: bytes, status: int = 200) -> str:
        self.routes[path] = (status, body)
        return self.base + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    served = Origin()
    yield served
    served.close()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProcess]:
    yield from module_server(
        tmp_path_factory,
        backend,
        env={
            "TASKGATE_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
            "TASKGATE_ALLOW_PRIVATE_URLS": "true",
        },
    )


@pytest.fixture(scope="module")
def acct(srv: ServerProcess) -> Account:
    return quick_account(srv.data_dir, "filetasks", concurrency=4)


@pytest.fixture
def http(srv: ServerProcess, acct: Account) -> Iterator[httpx.Client]:
    with srv.client(acct.key) as client:
        yield client


def files_of(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item for item in outputs if "file_id" in item]


def counts(srv: ServerProcess, account: Account) -> tuple[int, int, int]:
    """Tasks, ledger entries and files of an account."""
    return tuple(  # type: ignore[return-value]
        int(
            sql(srv.data_dir, f"SELECT count(*) FROM {table} WHERE account_id = ?", account.id)[0][
                0
            ]
        )
        for table in ("tasks", "ledger", "files")
    )


# -- inputs by id, outputs with links ----------------------------------------------------


def test_upload_submit_output_link_download(srv: ServerProcess, http: httpx.Client) -> None:
    picture = filesamples.image("png", 40, 30)
    sound = filesamples.audio("ogg", seconds=0.4)
    source = upload(http, picture)
    extra = upload(http, sound, "in.ogg")
    task = submit(http, "copy-files", input={"source": source, "extra": [extra]})
    done = wait_status(http, task["id"], {"completed", "failed"})
    assert done["status"] == "completed", done["error"]
    assert done["input"]["source"] == source
    image, audio = files_of(done["output"])
    assert image["type"] == "image" and image["content_type"] == "image/png"
    assert (image["width"], image["height"], image["bytes"]) == (40, 30, len(picture))
    assert audio["type"] == "audio" and audio["content_type"] == "audio/ogg"
    assert 0.3 < audio["duration"] < 0.6
    for item, data in ((image, picture), (audio, sound)):
        assert item["expired"] is False
        assert item["url"].startswith(f"{srv.base_url}/v1/files/{item['file_id']}/content?")
        assert parse_time(item["url_expires_at"]) <= parse_time(item["expires_at"])
        downloaded = httpx.get(item["url"])  # no API key: the link is enough
        assert downloaded.status_code == 200
        assert downloaded.content == data
        ranged = httpx.get(item["url"], headers={"Range": "bytes=8-15"})
        assert ranged.status_code == 206 and ranged.content == data[8:16]
    listed = json_of(http.get("/v1/files", params={"task_id": task["id"]}), 200)["data"]
    assert {f["id"] for f in listed} == {image["file_id"], audio["file_id"]}
    assert all(f["purpose"] == "output" and f["task_id"] == task["id"] for f in listed)
    # The task list signs links too.
    in_list = next(t for t in http.get("/v1/tasks").json()["data"] if t["id"] == task["id"])
    assert files_of(in_list["output"])[0]["url"] == image["url"]


def test_wait_output_bytes_makes_a_file_output(http: httpx.Client) -> None:
    task = submit(http, "wait", input={"output_bytes": 300_000})
    done = wait_status(http, task["id"], {"completed"})
    (item,) = files_of(done["output"])
    assert item["type"] == "file"
    assert item["content_type"] == "application/octet-stream"
    assert item["bytes"] == 300_000
    body = httpx.get(item["url"])
    assert body.status_code == 200 and body.content == bytes(300_000)
    tail = httpx.get(item["url"], headers={"Range": "bytes=-10"})
    assert tail.status_code == 206
    assert tail.headers["content-range"] == "bytes 299990-299999/300000"


def test_input_by_url(srv: ServerProcess, http: httpx.Client, origin: Origin) -> None:
    picture = filesamples.image("jpeg", 20, 20)
    url = origin.put("/pics/photo%20one.jpg", picture)
    task = submit(http, "copy-files", input={"source": url})
    assert task["input"]["source"] == url
    done = wait_status(http, task["id"], {"completed", "failed"})
    assert done["status"] == "completed", done["error"]
    (item,) = files_of(done["output"])
    assert httpx.get(item["url"]).content == picture
    fetched = [
        f
        for f in http.get("/v1/files", params={"purpose": "input"}).json()["data"]
        if f["filename"] == "photo one.jpg"
    ]
    assert fetched and fetched[0]["content_type"] == "image/jpeg"


def test_a_retried_submission_fetches_nothing_again(http: httpx.Client, origin: Origin) -> None:
    # (The origin serves the module's tests on both databases: a path of this run's own.)
    path = f"/once-{uuid.uuid4().hex}.png"
    url = origin.put(path, filesamples.image("png"))
    body = {"workflow": "copy-files", "input": {"source": url}, "out_task_id": "fetch-once"}
    first = json_of(http.post("/v1/tasks", json=body), 201)
    again = json_of(http.post("/v1/tasks", json=body), 200)
    assert again["id"] == first["id"]
    assert origin.hits[path] == 1
    wait_status(http, first["id"], {"completed"})


# -- bad inputs at submit ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def stranger_file(srv: ServerProcess) -> str:
    other = quick_account(srv.data_dir, "stranger")
    with srv.client(other.key) as http:
        return upload(http, filesamples.image("png"))


def _bad_inputs(origin: Origin, stranger_file: str) -> dict[str, tuple[dict[str, Any], str]]:
    closed = f"http://127.0.0.1:{free_port()}/gone.png"
    return {
        "unknown-id": ({"source": UNKNOWN}, "input.source"),
        "foreign-id": ({"source": stranger_file}, "input.source"),
        "not-a-ref": ({"source": "picture.png"}, "input.source"),
        "ftp-url": ({"source": "ftp://127.0.0.1/x.png"}, "input.source"),
        "url-404": ({"source": origin.put("/missing", b"", status=404)}, "input.source"),
        "url-unreachable": ({"source": closed}, "input.source"),
        "url-not-media": ({"source": origin.put("/text", b"hello there")}, "input.source"),
        "url-corrupt": (
            {"source": origin.put("/bad.png", b"\x89PNG\r\n\x1a\n" + b"x" * 100)},
            "input.source",
        ),
        "url-too-large": (
            {"source": origin.put("/big.png", b"\x89PNG" + bytes(MAX_UPLOAD))},
            "input.source",
        ),
        "unknown-in-list": (
            {"source": origin.put("/ok.png", filesamples.image("png")), "extra": [UNKNOWN]},
            "input.extra.0",
        ),
    }


BAD_NAMES = [
    "unknown-id",
    "foreign-id",
    "not-a-ref",
    "ftp-url",
    "url-404",
    "url-unreachable",
    "url-not-media",
    "url-corrupt",
    "url-too-large",
    "unknown-in-list",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_file_inputs_are_422_naming_the_field(
    srv: ServerProcess,
    acct: Account,
    http: httpx.Client,
    origin: Origin,
    stranger_file: str,
    name: str,
) -> None:
    body, param = _bad_inputs(origin, stranger_file)[name]
    before = counts(srv, acct)
    usage = http.get("/v1/usage").json()
    response = http.post("/v1/tasks", json={"workflow": "copy-files", "input": body})
    assert_error(response, 422, "invalid_param", param)
    tasks_after, ledger_after, files_after = counts(srv, acct)
    assert (tasks_after, ledger_after) == before[:2]
    # A URL fetched for a rejected submission may be kept as an input file (it
    # expires with the input retention); a refused URL is never kept.
    assert files_after == before[2] or name == "unknown-in-list"
    assert http.get("/v1/usage").json()["balance"] == usage["balance"]


def test_expired_input_is_refused(srv: ServerProcess, http: httpx.Client) -> None:
    file_id = upload(http, filesamples.image("png"))
    sql(srv.data_dir, "UPDATE files SET expires_at = 1 WHERE id = ?", file_id)
    response = http.post("/v1/tasks", json={"workflow": "copy-files", "input": {"source": file_id}})
    assert_error(response, 422, "invalid_param", "input.source")


def test_workflow_schema_marks_file_fields(http: httpx.Client) -> None:
    schema = json_of(http.get("/v1/workflows/copy-files"), 200)["input_schema"]
    assert schema["properties"]["source"]["format"] == "file-ref"


# -- files kept alive by live tasks; deleting tasks with their files ---------------------------


def test_a_file_in_use_cannot_be_deleted(srv: ServerProcess, http: httpx.Client) -> None:
    file_id = upload(http, filesamples.image("png"))
    task = submit(http, "copy-files", input={"source": file_id, "hold_seconds": 30})
    try:
        assert_error(http.delete(f"/v1/files/{file_id}"), 409, "file_in_use")
        assert http.get(f"/v1/files/{file_id}/content").status_code == 200
    finally:
        cancel_quietly(http, [task["id"]])
    wait_status(http, task["id"], {"cancelled"})
    assert json_of(http.delete(f"/v1/files/{file_id}"), 200)["deleted"] is True
    assert not (srv.data_dir / "blobs" / "files" / file_id).exists()


def test_delete_task_purges_it_and_its_files(
    srv: ServerProcess, acct: Account, http: httpx.Client
) -> None:
    source = upload(http, filesamples.image("gif"))
    running = submit(http, "copy-files", input={"source": source, "hold_seconds": 30})
    try:
        assert_error(http.delete(f"/v1/tasks/{running['id']}"), 409, "task_running")
    finally:
        cancel_quietly(http, [running["id"]])
    task = submit(http, "copy-files", input={"source": source})
    done = wait_status(http, task["id"], {"completed"})
    (item,) = files_of(done["output"])
    blob = srv.data_dir / "blobs" / "files" / item["file_id"]
    assert blob.exists()
    deleted = json_of(http.delete(f"/v1/tasks/{task['id']}"), 200)
    assert deleted == {"id": task["id"], "object": "task", "deleted": True}
    assert not blob.exists()
    assert_error(http.get(f"/v1/tasks/{task['id']}"), 404, "task_not_found")
    assert_error(http.get(f"/v1/files/{item['file_id']}"), 404, "file_not_found")
    assert_error(httpx.get(item["url"]), 404, "file_not_found")
    for table in ("events", "task_inputs", "webhook_deliveries"):
        assert sql(srv.data_dir, f"SELECT count(*) FROM {table} WHERE task_id = ?", task["id"]) == [
            (0,)
        ]
    # The uploaded input belongs to the account and stays.
    assert http.get(f"/v1/files/{source}").status_code == 200
    wait_status(http, running["id"], {"cancelled"})


# -- retention ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProcess]:
    """A server whose outputs live 2 s, inputs 1 s after their last use, and terminal
    tasks 4 s, swept every 0.2 s; its links name a public base URL."""
    yield from module_server(
        tmp_path_factory,
        backend,
        env={
            "TASKGATE_OUTPUT_RETENTION": "2",
            "TASKGATE_INPUT_RETENTION": "1",
            "TASKGATE_TASK_RETENTION": "4",
            "TASKGATE_RETENTION_INTERVAL_SECONDS": "0.2",
            "TASKGATE_PUBLIC_URL": "https://media.example.test",
            "TASKGATE_ADMIN_TOKEN": ADMIN_TOKEN,
        },
    )


def _local(srv: ServerProcess, url: str) -> str:
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == "https://media.example.test"
    return srv.base_url + parts.path + "?" + parts.query


def test_outputs_expire_then_tasks_are_purged(short: ServerProcess) -> None:
    account = quick_account(short.data_dir, "retention")
    with short.client(account.key) as http:
        task = submit(http, "wait", input={"output_bytes": 1000})
        done = wait_status(http, task["id"], {"completed"})
        (item,) = files_of(done["output"])
        link = _local(short, item["url"])
        assert httpx.get(link).content == bytes(1000)
        blob = short.data_dir / "blobs" / "files" / item["file_id"]

        def expired() -> dict[str, Any] | None:
            current = http.get(f"/v1/tasks/{task['id']}").json()
            entry = files_of(current["output"])[0]
            return current if entry["expired"] and not blob.exists() else None

        later = wait_until(expired, timeout=10, message="the output to expire")
        entry = files_of(later["output"])[0]
        assert entry["url"] is None and entry["url_expires_at"] is None
        assert_error(httpx.get(link), 410, "file_expired")
        assert_error(http.get(f"/v1/files/{item['file_id']}/content"), 410, "file_expired")
        assert http.get(f"/v1/files/{item['file_id']}").json()["expired"] is True
        # Recorded deliveries of the task's events go with it.
        sql(
            short.data_dir,
            "INSERT INTO webhook_deliveries (id, account_id, target, task_id, event_id, "
            "event_type, payload, status, created_at, updated_at) "
            "VALUES ('del_x', ?, 'we_x', ?, 'evt_x', 'task.completed', '{}', 'delivered', 0, 0)",
            account.id,
            task["id"],
        )
        sql(
            short.data_dir,
            "INSERT INTO webhook_attempts (delivery_id, attempted_at, duration_ms) "
            "VALUES ('del_x', 0, 5)",
        )
        wait_until(
            lambda: http.get(f"/v1/tasks/{task['id']}").status_code == 404,
            timeout=15,
            message="the task to be purged",
        )
        for table, column in (
            ("events", "task_id"),
            ("files", "task_id"),
            ("webhook_deliveries", "task_id"),
            ("webhook_attempts", "delivery_id"),
        ):
            key = "del_x" if column == "delivery_id" else task["id"]
            assert sql(short.data_dir, f"SELECT count(*) FROM {table} WHERE {column} = ?", key) == [
                (0,)
            ], table


@pytest.mark.parametrize("value", [0, -1, 1.5, "3600", True])
def test_bad_output_retention_override(short: ServerProcess, value: Any) -> None:
    account = quick_account(short.data_dir, "badretention")
    with short.client(ADMIN_TOKEN) as admin:
        response = admin.patch(
            f"/v1/admin/accounts/{account.id}", json={"output_retention_seconds": value}
        )
        assert_error(response, 422, "invalid_param", "output_retention_seconds")
        current = json_of(admin.get(f"/v1/admin/accounts/{account.id}"), 200)
    assert current["output_retention_seconds"] is None


def test_account_output_retention_override(short: ServerProcess) -> None:
    keeper = quick_account(short.data_dir, "keeper")
    with short.client(ADMIN_TOKEN) as admin:
        changed = admin.patch(
            f"/v1/admin/accounts/{keeper.id}", json={"output_retention_seconds": 3600}
        )
        assert json_of(changed, 200)["output_retention_seconds"] == 3600
    plain = quick_account(short.data_dir, "plain")
    with short.client(keeper.key) as kept_http, short.client(plain.key) as plain_http:
        kept = wait_status(
            kept_http, submit(kept_http, "wait", input={"output_bytes": 10})["id"], {"completed"}
        )
        gone = wait_status(
            plain_http, submit(plain_http, "wait", input={"output_bytes": 10})["id"], {"completed"}
        )
        kept_item, gone_item = files_of(kept["output"])[0], files_of(gone["output"])[0]
        lifetime = parse_time(kept_item["expires_at"]) - parse_time(kept["completed_at"])
        assert 3590 < lifetime.total_seconds() <= 3600
        wait_until(
            lambda: plain_http.get(f"/v1/files/{gone_item['file_id']}").json()["expired"],
            timeout=10,
            message="the default-retention output to expire",
        )
        assert httpx.get(_local(short, kept_item["url"])).content == bytes(10)


def test_unused_inputs_expire_but_a_live_task_keeps_its_own(short: ServerProcess) -> None:
    account = quick_account(short.data_dir, "inputs")
    with short.client(account.key) as http:
        idle = upload(http, filesamples.image("png"))
        used = upload(http, filesamples.image("png"))
        task = submit(http, "copy-files", input={"source": used, "hold_seconds": 3})
        wait_until(
            lambda: (
                http.get(f"/v1/files/{idle}").json()["expired"]
                and not (short.data_dir / "blobs" / "files" / idle).exists()
            ),
            timeout=10,
            message="the idle input to expire",
        )
        assert_error(http.get(f"/v1/files/{idle}/content"), 410, "file_expired")
        # Past its own expiry, the used input is still there for the running task.
        assert (short.data_dir / "blobs" / "files" / used).exists()
        done = wait_status(http, task["id"], {"completed"}, timeout=20)
        assert files_of(done["output"])[0]["bytes"] == len(filesamples.image("png"))


def test_stale_scratch_files_are_removed(short: ServerProcess) -> None:
    """A transfer cut short by a crash leaves a scratch file; the sweep removes it
    once it is an hour old (a fresh one may belong to an upload in progress)."""
    scratch = short.data_dir / "blobs" / ".tmp"
    stale, fresh = scratch / "upload-crashed.part", scratch / "upload-now.part"
    stale.write_bytes(b"half an upload")
    fresh.write_bytes(b"an upload in progress")
    an_hour_ago = time.time() - 3700
    os.utime(stale, (an_hour_ago, an_hour_ago))
    wait_until(lambda: not stale.exists(), timeout=10, message="the stale scratch file to go")
    assert fresh.exists()
    fresh.unlink()
