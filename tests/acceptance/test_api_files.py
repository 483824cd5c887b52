"""Uploads, reads, ranges, signed links and deletion of files over real HTTP, and
every bad input with proof that nothing was stored."""

from __future__ import annotations

import hashlib
import socket
import struct
import zlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from tests import filesamples
from tests.acceptance.apitools import (
    Account,
    assert_error,
    json_of,
    module_server,
    parse_time,
    quick_account,
    sql,
)
from tests.databases import Backend
from tests.helpers import ServerProcess, wait_until

pytestmark = pytest.mark.acceptance

MAX_UPLOAD = 1024 * 1024
UNKNOWN = "file_01J0000000000000000000000Z"
SHA256 = r"^[0-9a-f]{64}$"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProcess]:
    yield from module_server(
        tmp_path_factory, backend, env={"TASKGATE_MAX_UPLOAD_BYTES": str(MAX_UPLOAD)}
    )


@pytest.fixture(scope="module")
def acct(srv: ServerProcess) -> Account:
    return quick_account(srv.data_dir, "files")


@pytest.fixture(scope="module")
def stranger(srv: ServerProcess) -> Account:
    return quick_account(srv.data_dir, "stranger")


@pytest.fixture
def http(srv: ServerProcess, acct: Account) -> Iterator[httpx.Client]:
    with srv.client(acct.key) as client:
        yield client


def upload(
    http: httpx.Client,
    data: bytes,
    filename: str = "upload.bin",
    content_type: str = "application/octet-stream",
    **fields: str,
) -> httpx.Response:
    return http.post(
        "/v1/files",
        files={"file": (filename, data, content_type)},
        data={"purpose": "input", **fields},
    )


def uploaded(http: httpx.Client, data: bytes, filename: str = "upload.bin") -> dict[str, Any]:
    return json_of(upload(http, data, filename), 201)


def multipart(parts: list[tuple[bytes, bytes]], boundary: bytes = b"XyZ123") -> tuple[bytes, str]:
    """A multipart body from (headers, body) parts, sent as given."""
    body = b""
    for headers, content in parts:
        body += b"--" + boundary + b"\r\n" + headers + b"\r\n\r\n" + content + b"\r\n"
    body += b"--" + boundary + b"--\r\n"
    return body, f"multipart/form-data; boundary={boundary.decode()}"


def file_part(data: bytes, filename: bytes = b"a.png") -> tuple[bytes, bytes]:
    return b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"', data


def field_part(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    return b'Content-Disposition: form-data; name="' + name + b'"', value


class Stored:
    """What the server holds for an account: file rows, blobs, scratch files."""

    def __init__(self, srv: ServerProcess, account: Account) -> None:
        self.srv = srv
        self.account = account
        self.before = self.snapshot()

    def snapshot(self) -> tuple[int, list[str], list[str]]:
        rows = sql(
            self.srv.data_dir, "SELECT count(*) FROM files WHERE account_id = ?", self.account.id
        )[0][0]
        blobs = self.srv.data_dir / "blobs"
        kept = sorted(p.name for p in (blobs / "files").glob("*")) if blobs.exists() else []
        scratch = sorted(p.name for p in (blobs / ".tmp").glob("*")) if blobs.exists() else []
        return int(rows), kept, scratch

    def unchanged(self) -> None:
        rows, kept, scratch = self.snapshot()
        assert rows == self.before[0]
        assert kept == self.before[1]
        assert scratch == []


# -- uploads of every accepted type --------------------------------------------------

SAMPLES: dict[str, tuple[bytes, str, str]] = {
    **{
        f"image-{fmt}": (filesamples.image(fmt), "image", f"image/{fmt}")
        for fmt in filesamples.IMAGE_FORMATS
    },
    "audio-mp3": (filesamples.audio("mp3"), "audio", "audio/mpeg"),
    "audio-wav": (filesamples.audio("wav"), "audio", "audio/wav"),
    "audio-flac": (filesamples.audio("flac"), "audio", "audio/flac"),
    "audio-ogg": (filesamples.audio("ogg"), "audio", "audio/ogg"),
    "audio-m4a": (filesamples.audio("m4a"), "audio", "audio/mp4"),
    "video-mp4": (filesamples.video("mp4"), "video", "video/mp4"),
    "video-webm": (filesamples.video("webm"), "video", "video/webm"),
    "video-mov": (filesamples.video("mov"), "video", "video/quicktime"),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_upload_each_accepted_type(http: httpx.Client, name: str) -> None:
    data, kind, content_type = SAMPLES[name]
    # The client's name and Content-Type say something else: they are not trusted.
    response = upload(http, data, filename="misleading.txt", content_type="text/plain")
    body = json_of(response, 201)
    assert body["object"] == "file"
    assert body["id"].startswith("file_")
    assert body["type"] == kind
    assert body["content_type"] == content_type
    assert body["bytes"] == len(data)
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["purpose"] == "input"
    assert body["filename"] == "misleading.txt"
    assert parse_time(body["expires_at"]) > parse_time(body["created_at"])
    if kind in ("image", "video"):
        assert (body["width"], body["height"]) == ((32, 24) if kind == "image" else (64, 48))
    if kind in ("audio", "video"):
        assert 0.3 < body["duration"] < 0.7
    assert json_of(http.get(f"/v1/files/{body['id']}"), 200) == body
    content = http.get(f"/v1/files/{body['id']}/content")
    assert content.status_code == 200
    assert content.content == data
    assert content.headers["content-type"] == content_type
    assert content.headers["content-length"] == str(len(data))
    assert content.headers["etag"] == f'"{body["sha256"]}"'
    assert content.headers["accept-ranges"] == "bytes"


# -- bad uploads ----------------------------------------------------------------------


def test_too_large_by_content_length(srv: ServerProcess, acct: Account, http: httpx.Client) -> None:
    stored = Stored(srv, acct)
    data = filesamples.image("png") + bytes(MAX_UPLOAD)
    assert_error(upload(http, data), 413, "file_too_large", "file")
    stored.unchanged()


def test_too_large_while_streaming(srv: ServerProcess, acct: Account, http: httpx.Client) -> None:
    """No Content-Length (chunked): refused once the file passes the limit."""
    stored = Stored(srv, acct)
    body, content_type = multipart([file_part(b"\x89PNG" + bytes(MAX_UPLOAD))])

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    response = http.post("/v1/files", content=chunks(), headers={"Content-Type": content_type})
    assert_error(response, 413, "file_too_large", "file")
    stored.unchanged()


def test_exactly_the_limit_is_accepted(http: httpx.Client) -> None:
    # A WAV header declaring silence, padded to exactly the limit.
    wav = filesamples.audio("wav", seconds=0.1)
    data = wav + bytes(MAX_UPLOAD - len(wav))
    body = uploaded(http, data)
    assert body["bytes"] == MAX_UPLOAD


def _bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width``×``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


REFUSED: dict[str, tuple[bytes, int, str]] = {
    "text": (b"just some text, not media\n" * 10, 415, "unsupported_media_type"),
    "html-as-png": (b"<html><script>alert(1)</script></html>", 415, "unsupported_media_type"),
    "svg": (
        b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        415,
        "unsupported_media_type",
    ),
    "elf": (b"\x7fELF\x02\x01\x01" + bytes(200), 415, "unsupported_media_type"),
    "pdf": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + bytes(100), 415, "unsupported_media_type"),
    "zip": (b"PK\x03\x04" + bytes(100), 415, "unsupported_media_type"),
    "empty": (b"", 415, "unsupported_media_type"),
    "png-magic-then-garbage": (b"\x89PNG\r\n\x1a\n" + b"garbage" * 50, 422, "invalid_file"),
    "truncated-png": (filesamples.image("png", 64, 64)[:60], 422, "invalid_file"),
    "truncated-jpeg": (filesamples.image("jpeg", 64, 64)[:200], 422, "invalid_file"),
    "truncated-mp4": (filesamples.video("mp4")[:400], 422, "invalid_file"),
    "truncated-flac": (filesamples.audio("flac")[:100], 422, "invalid_file"),
    "decompression-bomb": (_bomb_png(20_000, 20_000), 422, "invalid_file"),
    "ogg-magic-then-garbage": (b"OggS" + bytes(300), 422, "invalid_file"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_bytes(srv: ServerProcess, acct: Account, http: httpx.Client, name: str) -> None:
    data, status, code = REFUSED[name]
    stored = Stored(srv, acct)
    assert_error(upload(http, data, filename="photo.png", content_type="image/png"), status, code)
    stored.unchanged()


def _raw(http: httpx.Client, parts: list[tuple[bytes, bytes]]) -> httpx.Response:
    body, content_type = multipart(parts)
    return http.post("/v1/files", content=body, headers={"Content-Type": content_type})


BAD_FORMS: dict[str, tuple[list[tuple[bytes, bytes]], str | None]] = {
    "no-file-part": ([field_part(b"purpose", b"input")], "file"),
    "two-files": ([file_part(b"a"), file_part(b"b")], "file"),
    "output-purpose": (
        [file_part(filesamples.image("png")), field_part(b"purpose", b"output")],
        "purpose",
    ),
    "unknown-field": (
        [file_part(filesamples.image("png")), field_part(b"colour", b"red")],
        "colour",
    ),
    "huge-field": ([file_part(b"x"), field_part(b"purpose", b"i" * 5000)], "purpose"),
}


@pytest.mark.parametrize("name", sorted(BAD_FORMS))
def test_bad_forms(srv: ServerProcess, acct: Account, http: httpx.Client, name: str) -> None:
    parts, param = BAD_FORMS[name]
    stored = Stored(srv, acct)
    assert_error(_raw(http, parts), 400, "invalid_param", param)
    stored.unchanged()


def test_not_multipart(srv: ServerProcess, acct: Account, http: httpx.Client) -> None:
    stored = Stored(srv, acct)
    response = http.post(
        "/v1/files", content=filesamples.image("png"), headers={"Content-Type": "image/png"}
    )
    assert_error(response, 400, "invalid_param", "file")
    response = http.post("/v1/files", json={"file": "abc"})
    assert_error(response, 400, "invalid_param", "file")
    stored.unchanged()


def test_malformed_multipart(srv: ServerProcess, acct: Account, http: httpx.Client) -> None:
    stored = Stored(srv, acct)
    response = http.post(
        "/v1/files",
        content=b"--XyZ123\r\nno headers end here",
        headers={"Content-Type": "multipart/form-data; boundary=XyZ123"},
    )
    assert_error(response, 400, "invalid_param", "file")
    stored.unchanged()


def test_upload_needs_a_key(srv: ServerProcess, acct: Account) -> None:
    stored = Stored(srv, acct)
    with srv.client("") as anonymous:
        assert_error(upload(anonymous, filesamples.image("png")), 401, "invalid_api_key")
    stored.unchanged()


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        (b"../../etc/passwd.png", "passwd.png"),
        (b"C:\\Users\\me\\photo.png", "photo.png"),
        (b"bad\x01name\x7f.png", "badname.png"),
        (b"..", "file"),
        (b"   .hidden.png  ", "hidden.png"),
        ("caf\u00e9 \u2603.png".encode(), "caf\u00e9 \u2603.png"),
        (b"n" * 400 + b".png", "n" * 251 + ".png"),
    ],
)
def test_filenames_are_sanitised(http: httpx.Client, sent: bytes, kept: str) -> None:
    body = json_of(_raw(http, [file_part(filesamples.image("png"), sent)]), 201)
    assert body["filename"] == kept
    disposition = http.get(f"/v1/files/{body['id']}/content").headers["content-disposition"]
    assert disposition.startswith("inline; filename=")
    assert "/" not in disposition and "\\" not in disposition


# -- reading, listing -------------------------------------------------------------------


def test_list_pages_newest_first(srv: ServerProcess) -> None:
    account = quick_account(srv.data_dir, "lister")
    with srv.client(account.key) as http:
        made = [uploaded(http, filesamples.image("gif"))["id"] for _ in range(5)]
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = json_of(http.get("/v1/files", params=params), 200)
            assert page["object"] == "list"
            seen.extend(item["id"] for item in page["data"])
            if not page["has_more"]:
                assert page["next_cursor"] is None
                break
            cursor = page["next_cursor"]
        assert seen == made[::-1]
        assert json_of(http.get("/v1/files", params={"purpose": "output"}), 200)["data"] == []


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "dGFza18x"}, "cursor"),
        ({"purpose": "both"}, "purpose"),
    ],
)
def test_list_bad_params(http: httpx.Client, params: dict[str, Any], param: str) -> None:
    assert_error(http.get("/v1/files", params=params), 400, "invalid_param", param)


def test_another_accounts_file_is_not_found(
    srv: ServerProcess, http: httpx.Client, stranger: Account
) -> None:
    mine = uploaded(http, filesamples.image("png"))["id"]
    with srv.client(stranger.key) as other:
        for method, path in [
            ("GET", f"/v1/files/{mine}"),
            ("GET", f"/v1/files/{mine}/content"),
            ("POST", f"/v1/files/{mine}/url"),
            ("DELETE", f"/v1/files/{mine}"),
        ]:
            assert_error(other.request(method, path), 404, "file_not_found")
        assert mine not in [f["id"] for f in other.get("/v1/files").json()["data"]]
    assert http.get(f"/v1/files/{mine}/content").status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/v1/files/{UNKNOWN}"),
        ("GET", f"/v1/files/{UNKNOWN}/content"),
        ("POST", f"/v1/files/{UNKNOWN}/url"),
        ("DELETE", f"/v1/files/{UNKNOWN}"),
        ("GET", "/v1/files/nonsense"),
    ],
)
def test_unknown_file(http: httpx.Client, method: str, path: str) -> None:
    assert_error(http.request(method, path), 404, "file_not_found")


# -- ranges ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def media_file(srv: ServerProcess, acct: Account) -> tuple[str, bytes]:
    data = filesamples.audio("wav", seconds=1.0)
    with srv.client(acct.key) as http:
        return uploaded(http, data, "tone.wav")["id"], data


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=0-99", 0, 99),
        ("bytes=100-199", 100, 199),
        ("bytes=-500", -500, -1),
        ("bytes=1000-", 1000, -1),
        ("bytes=5-999999999", 5, -1),
    ],
)
def test_range_requests(
    http: httpx.Client, media_file: tuple[str, bytes], header: str, first: int, last: int
) -> None:
    file_id, data = media_file
    size = len(data)
    start = first % size
    end = last % size
    response = http.get(f"/v1/files/{file_id}/content", headers={"Range": header})
    assert response.status_code == 206, response.text
    assert response.content == data[start : end + 1]
    assert response.headers["content-range"] == f"bytes {start}-{end}/{size}"
    assert response.headers["content-length"] == str(end - start + 1)
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["content-type"] == "audio/wav"


@pytest.mark.parametrize("header", ["bytes=999999999-", "bytes=-0"])
def test_unsatisfiable_range(
    http: httpx.Client, media_file: tuple[str, bytes], header: str
) -> None:
    file_id, data = media_file
    response = http.get(f"/v1/files/{file_id}/content", headers={"Range": header})
    assert_error(response, 416, "invalid_param", "Range")
    assert response.headers["content-range"] == f"bytes */{len(data)}"


@pytest.mark.parametrize(
    "header", ["bytes=0-1,5-6", "items=0-5", "bytes=abc", "bytes=9-2", "bytes=-"]
)
def test_ranges_ignored_serve_the_whole_file(
    http: httpx.Client, media_file: tuple[str, bytes], header: str
) -> None:
    file_id, data = media_file
    response = http.get(f"/v1/files/{file_id}/content", headers={"Range": header})
    assert response.status_code == 200
    assert response.content == data
    assert "content-range" not in response.headers


def test_if_range_and_head(http: httpx.Client, media_file: tuple[str, bytes]) -> None:
    file_id, data = media_file
    url = f"/v1/files/{file_id}/content"
    etag = http.get(url, headers={"Range": "bytes=0-0"}).headers["etag"]
    same = http.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert same.status_code == 206 and same.content == data[:10]
    changed = http.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert changed.status_code == 200 and changed.content == data
    head = http.head(url, headers={"Range": "bytes=10-19"})
    assert head.status_code == 206
    assert head.headers["content-length"] == "10"
    assert head.content == b""


# -- signed links -------------------------------------------------------------------------


def _link(http: httpx.Client, file_id: str, **body: Any) -> dict[str, Any]:
    return json_of(http.post(f"/v1/files/{file_id}/url", json=body or None), 200)


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    query.update(changes)
    return parts._replace(query=urlencode(query)).geturl()


def test_signed_link_opens_without_a_key(srv: ServerProcess, http: httpx.Client) -> None:
    data = filesamples.image("webp")
    file_id = uploaded(http, data)["id"]
    link = _link(http, file_id, expires_in=600)
    assert link["url"].startswith(f"{srv.base_url}/v1/files/{file_id}/content?")
    remaining = (
        parse_time(link["url_expires_at"]).timestamp()
        - parse_time(http.get(f"/v1/files/{file_id}").json()["created_at"]).timestamp()
    )
    assert 590 < remaining <= 601
    response = httpx.get(link["url"])
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["cache-control"].startswith("private, max-age=")
    ranged = httpx.get(link["url"], headers={"Range": "bytes=0-3"})
    assert ranged.status_code == 206 and ranged.content == data[:4]
    # The default link lives as long as the file.
    default = _link(http, file_id)
    assert (
        default["url_expires_at"][:19] == http.get(f"/v1/files/{file_id}").json()["expires_at"][:19]
    )


def test_tampered_links_are_refused(http: httpx.Client) -> None:
    file_id = uploaded(http, filesamples.image("png"))["id"]
    other_id = uploaded(http, filesamples.image("gif"))["id"]
    url = _link(http, file_id, expires_in=600)["url"]
    query = parse_qs(urlsplit(url).query)
    expires, signature = query["expires"][0], query["signature"][0]
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    bad = [
        _with_query(url, signature=flipped),
        _with_query(url, expires=str(int(expires) + 1)),
        _with_query(url, expires="12x"),
        _with_query(url, signature=""),
        url.replace(file_id, other_id),
        url.split("&signature=")[0],
    ]
    for candidate in bad:
        assert_error(httpx.get(candidate), 403, "invalid_signature")


def test_expired_link(http: httpx.Client) -> None:
    file_id = uploaded(http, filesamples.image("png"))["id"]
    url = _link(http, file_id, expires_in=1)["url"]
    wait_until(lambda: httpx.get(url).status_code == 403, timeout=5, message="the link to expire")
    assert_error(httpx.get(url), 403, "link_expired")


@pytest.mark.parametrize(
    "body", [{"expires_in": 0}, {"expires_in": -5}, {"expires_in": "soon"}, {"other": 1}]
)
def test_link_bad_params(http: httpx.Client, body: dict[str, Any]) -> None:
    file_id = uploaded(http, filesamples.image("png"))["id"]
    response = http.post(f"/v1/files/{file_id}/url", json=body)
    assert_error(response, 422, "invalid_param")


# -- deletion and expiry ----------------------------------------------------------------------


def test_delete_removes_the_row_and_the_blob(srv: ServerProcess, http: httpx.Client) -> None:
    body = uploaded(http, filesamples.image("jpeg"))
    blob = srv.data_dir / "blobs" / "files" / body["id"]
    assert blob.read_bytes() == filesamples.image("jpeg")
    url = _link(http, body["id"])["url"]
    deleted = json_of(http.delete(f"/v1/files/{body['id']}"), 200)
    assert deleted == {"id": body["id"], "object": "file", "deleted": True}
    assert not blob.exists()
    assert_error(http.get(f"/v1/files/{body['id']}"), 404, "file_not_found")
    assert_error(httpx.get(url), 404, "file_not_found")
    assert_error(http.delete(f"/v1/files/{body['id']}"), 404, "file_not_found")


def test_an_expired_file_is_gone(srv: ServerProcess, http: httpx.Client) -> None:
    file_id = uploaded(http, filesamples.image("png"))["id"]
    url = _link(http, file_id, expires_in=3600)["url"]
    sql(srv.data_dir, "UPDATE files SET expires_at = 1 WHERE id = ?", file_id)
    assert http.get(f"/v1/files/{file_id}").json()["expired"] is True
    assert_error(http.get(f"/v1/files/{file_id}/content"), 410, "file_expired")
    assert_error(http.post(f"/v1/files/{file_id}/url"), 410, "file_expired")
    # The link was signed for later than the file now lives: the file's expiry wins.
    assert_error(httpx.get(url), 410, "file_expired")


def test_blob_missing_under_a_live_row_is_gone(srv: ServerProcess, http: httpx.Client) -> None:
    file_id = uploaded(http, filesamples.image("png"))["id"]
    (srv.data_dir / "blobs" / "files" / file_id).unlink()
    assert_error(http.get(f"/v1/files/{file_id}/content"), 410, "file_expired")


def test_scratch_dir_is_empty_after_all(srv: ServerProcess) -> None:
    assert list((srv.data_dir / "blobs" / ".tmp").iterdir()) == []


def test_a_client_that_goes_away_mid_upload_leaves_nothing(
    srv: ServerProcess, acct: Account
) -> None:
    stored = Stored(srv, acct)
    body, content_type = multipart([file_part(filesamples.image("png") + bytes(500_000))])
    host, port = urlsplit(srv.base_url).hostname, urlsplit(srv.base_url).port
    assert host is not None and port is not None
    head = (
        f"POST /v1/files HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {acct.key}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, port)) as conn:
        conn.sendall(head + body[: len(body) // 2])
        # The server is receiving into a scratch file now.
        wait_until(
            lambda: list((srv.data_dir / "blobs" / ".tmp").iterdir()),
            timeout=5,
            message="the upload to start",
        )
    wait_until(
        lambda: not list((srv.data_dir / "blobs" / ".tmp").iterdir()),
        timeout=5,
        message="the scratch file to be removed",
    )
    stored.unchanged()


def test_the_file_routes_are_documented(srv: ServerProcess, http: httpx.Client) -> None:
    schema = json_of(http.get("/openapi.json"), 200)
    paths = schema["paths"]
    assert set(paths["/v1/files"]) == {"get", "post"}
    assert set(paths["/v1/files/{file_id}"]) == {"get", "delete"}
    assert set(paths["/v1/files/{file_id}/content"]) == {"get"}
    assert "multipart/form-data" in paths["/v1/files"]["post"]["requestBody"]["content"]
    assert "Duplicate Operation ID" not in srv.log()
