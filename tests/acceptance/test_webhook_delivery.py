"""Webhook and callback deliveries against a real receiver on 127.0.0.1: signed per
Standard Webhooks, retried, in order per task, visible in the delivery log, and
surviving a killed server."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tests.acceptance.apitools import (
    Account,
    assert_error,
    json_of,
    module_server,
    quick_account,
    sql,
    submit,
    wait_status,
)
from tests.acceptance.receiver import Received, Receiver, fail_first, receiving, verify
from tests.databases import Backend
from tests.helpers import ServerProcess, start_server, wait_until

SCHEDULE = "0.05,0.1,0.2"
ENV = {
    "TASKGATE_ALLOW_PRIVATE_URLS": "true",
    "TASKGATE_WEBHOOK_RETRY_SCHEDULE": SCHEDULE,
    "TASKGATE_WEBHOOK_TIMEOUT_SECONDS": "2",
}
TASK_EVENTS = ["task.created", "task.started", "task.completed"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProcess]:
    yield from module_server(tmp_path_factory, backend, env=ENV)


@pytest.fixture
def account(srv: ServerProcess) -> Account:
    return quick_account(srv.data_dir, "wd")


@pytest.fixture
def http(srv: ServerProcess, account: Account) -> Iterator[httpx.Client]:
    with srv.client(account.key) as client:
        yield client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as made:
        yield made


def endpoint(http: httpx.Client, url: str, **body: Any) -> dict[str, Any]:
    return json_of(http.post("/v1/webhooks", json={"url": url, **body}), 201)


def deliveries(http: httpx.Client, webhook_id: str, **params: Any) -> list[dict[str, Any]]:
    page = json_of(
        http.get(f"/v1/webhooks/{webhook_id}/deliveries", params={"limit": 100, **params}), 200
    )
    found: list[dict[str, Any]] = page["data"]
    return found


def settled(http: httpx.Client, webhook_id: str, count: int) -> list[dict[str, Any]]:
    """Wait until ``count`` deliveries exist and none is pending."""

    def done() -> list[dict[str, Any]] | None:
        found = deliveries(http, webhook_id)
        if len(found) >= count and all(d["status"] != "pending" for d in found):
            return found
        return None

    return wait_until(done, timeout=30, message=f"{count} settled deliveries")


def by_task(accepted: list[Received]) -> dict[str, list[str]]:
    order: dict[str, list[str]] = {}
    for received in accepted:
        event = received.event
        order.setdefault(event["data"]["id"], []).append(event["type"])
    return order


# -- delivery, signing, retries, order --------------------------------------------


def test_every_event_arrives_signed_in_order_after_failed_attempts(http: httpx.Client) -> None:
    receiver = Receiver(fail_first(2))
    try:
        hook = endpoint(http, receiver.url())
        tasks = [submit(http, input={"steps": 3}) for _ in range(3)]
        for task in tasks:
            wait_status(http, task["id"], {"completed"})
        accepted = receiver.wait_accepted(len(tasks) * len(TASK_EVENTS))
        everything = receiver.snapshot()
    finally:
        receiver.close()

    # Each event: two failed attempts, then one accepted, all with the same webhook-id.
    for received in accepted:
        assert received.nth == 3
        payload = verify(received, hook["secret"])
        assert payload["id"] == received.webhook_id
        assert received.event == payload
    attempts_per_id: dict[str, list[int]] = {}
    for received in everything:
        attempts_per_id.setdefault(received.webhook_id, []).append(received.status)
    assert all(statuses == [500, 500, 200] for statuses in attempts_per_id.values())
    # Timestamps are per attempt.
    stamps = {r.headers["webhook-timestamp"] for r in everything}
    assert all(stamp.isdigit() for stamp in stamps)

    # Per task, the events arrive in the order they happened, each once.
    assert by_task(accepted) == {task["id"]: TASK_EVENTS for task in tasks}
    # The payload is the event: its id, type and the task as it was then.
    first = accepted[0].event
    assert first["id"].startswith("evt_")
    assert set(first) == {"id", "type", "created_at", "data"}
    assert first["data"]["object"] == "task"

    # The delivery log shows every attempt.
    log = settled(http, hook["id"], len(accepted))
    assert len(log) == len(accepted)
    for delivery in log:
        assert delivery["object"] == "webhook_delivery"
        assert delivery["webhook_id"] == hook["id"]
        assert delivery["status"] == "delivered"
        assert delivery["attempt_count"] == 3
        assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200]
        assert [a["error"] for a in delivery["attempts"]] == ["http_error", "http_error", None]
        assert all(a["duration_ms"] >= 0 and a["attempted_at"] for a in delivery["attempts"])
        assert delivery["delivered_at"] is not None
        assert delivery["next_attempt_at"] is None
    assert {d["event_id"] for d in log} == {r.webhook_id for r in accepted}


def test_progress_is_left_out_unless_asked_for(http: httpx.Client, receiver: Receiver) -> None:
    plain = endpoint(http, receiver.url("/plain"))
    chatty = endpoint(
        http, receiver.url("/chatty"), enabled_events=["task.progress", "task.completed"]
    )
    task = submit(http, input={"steps": 2, "seconds": 0.3})
    wait_status(http, task["id"], {"completed"})
    settled(http, plain["id"], 3)
    settled(http, chatty["id"], 2)
    assert by_task(receiver.accepted("/plain")) == {task["id"]: TASK_EVENTS}
    chatty_types = by_task(receiver.accepted("/chatty"))[task["id"]]
    assert chatty_types[-1] == "task.completed"
    assert set(chatty_types[:-1]) == {"task.progress"}


def test_retry_after_is_honoured(http: httpx.Client) -> None:
    def answer(_path: str, nth: int) -> tuple[int, dict[str, str]]:
        return (503, {"Retry-After": "1"}) if nth == 1 else (200, {})

    receiver = Receiver(answer)
    try:
        endpoint(http, receiver.url(), enabled_events=["task.created"])
        submit(http)
        receiver.wait_accepted(1)
        first, second = receiver.snapshot()[:2]
    finally:
        receiver.close()
    assert (first.status, second.status) == (503, 200)
    # The schedule alone would have retried after about 0.05 s.
    assert second.at - first.at >= 0.95


def test_a_redirect_is_a_failure_and_is_not_followed(http: httpx.Client) -> None:
    def answer(path: str, nth: int) -> tuple[int, dict[str, str]]:
        if path == "/hook" and nth == 1:
            return 302, {"Location": "/elsewhere"}
        return 200, {}

    receiver = Receiver(answer)
    try:
        hook = endpoint(http, receiver.url(), enabled_events=["task.created"])
        submit(http)
        receiver.wait_accepted(1)
        [delivery] = settled(http, hook["id"], 1)
        paths = [r.path for r in receiver.snapshot()]
    finally:
        receiver.close()
    assert paths == ["/hook", "/hook"]
    assert [(a["status_code"], a["error"]) for a in delivery["attempts"]] == [
        (302, "redirect"),
        (200, None),
    ]


def test_410_gone_disables_the_endpoint(http: httpx.Client) -> None:
    receiver = Receiver(lambda _path, _nth: (410, {}))
    try:
        hook = endpoint(http, receiver.url(), enabled_events=["task.created"])
        submit(http)
        [delivery] = settled(http, hook["id"], 1)
        got = json_of(http.get(f"/v1/webhooks/{hook['id']}"), 200)
        # Later events are not delivered to it.
        submit(http)
        task = submit(http, input={"seconds": 0})
        wait_status(http, task["id"], {"completed"})
        received = receiver.snapshot()
    finally:
        receiver.close()
    assert delivery["status"] == "failed"
    assert delivery["attempt_count"] == 1
    assert [a["status_code"] for a in delivery["attempts"]] == [410]
    assert got["status"] == "disabled"
    assert "410" in got["disabled_reason"]
    assert len(received) == 1
    assert len(deliveries(http, hook["id"])) == 1


def test_a_delivery_that_runs_out_of_retries_fails_and_can_be_retried(
    http: httpx.Client,
) -> None:
    healthy = False

    def answer(_path: str, _nth: int) -> tuple[int, dict[str, str]]:
        return (200, {}) if healthy else (500, {})

    receiver = Receiver(answer)
    try:
        hook = endpoint(http, receiver.url(), enabled_events=["task.created"])
        submit(http)
        [delivery] = settled(http, hook["id"], 1)
        assert delivery["status"] == "failed"
        # The first attempt and one per delay of the schedule.
        assert delivery["attempt_count"] == 1 + len(SCHEDULE.split(","))
        assert delivery["last_status_code"] == 500

        healthy = True
        retried = json_of(
            http.post(f"/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}/retry"), 202
        )
        assert retried["id"] == delivery["id"]
        assert retried["status"] == "pending"
        receiver.wait_accepted(1)
        [again] = settled(http, hook["id"], 1)
    finally:
        receiver.close()
    assert again["status"] == "delivered"
    assert again["attempt_count"] == delivery["attempt_count"] + 1
    assert again["attempts"][-1]["status_code"] == 200


def test_filter_deliveries_by_status_and_page_through_them(
    http: httpx.Client, receiver: Receiver
) -> None:
    hook = endpoint(http, receiver.url(), enabled_events=["task.created"])
    for _ in range(5):
        submit(http)
    log = settled(http, hook["id"], 5)
    assert [d["id"] for d in log] == sorted((d["id"] for d in log), reverse=True)
    assert len(deliveries(http, hook["id"], status="delivered")) == 5
    assert deliveries(http, hook["id"], status="failed") == []
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = json_of(http.get(f"/v1/webhooks/{hook['id']}/deliveries", params=params), 200)
        seen.extend(d["id"] for d in page["data"])
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert seen == [d["id"] for d in log]


def test_a_test_event_reaches_the_endpoint(http: httpx.Client, receiver: Receiver) -> None:
    hook = endpoint(http, receiver.url())
    queued = json_of(http.post(f"/v1/webhooks/{hook['id']}/test"), 202)
    assert queued["event_type"] == "webhook.test"
    assert queued["status"] == "pending"
    assert queued["task_id"] is None
    [received] = receiver.wait_accepted(1)
    payload = verify(received, hook["secret"])
    assert payload["type"] == "webhook.test"
    assert payload["id"] == queued["event_id"]
    assert payload["data"]["webhook_id"] == hook["id"]
    [delivery] = settled(http, hook["id"], 1)
    assert delivery["status"] == "delivered"


def test_after_a_rotation_both_secrets_sign_for_a_day(
    http: httpx.Client, receiver: Receiver
) -> None:
    hook = endpoint(http, receiver.url())
    rotated = json_of(http.post(f"/v1/webhooks/{hook['id']}/rotate-secret"), 200)
    assert rotated["secret"] != hook["secret"]
    http.post(f"/v1/webhooks/{hook['id']}/test")
    [received] = receiver.wait_accepted(1)
    assert len(received.headers["webhook-signature"].split(" ")) == 2
    verify(received, hook["secret"])
    verify(received, rotated["secret"])
    stranger = "whsec_" + "A" * 43 + "="
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(received.body, received.headers)


def test_an_edited_url_takes_effect_for_pending_deliveries(http: httpx.Client) -> None:
    receiver = Receiver(lambda path, _nth: (500, {}) if path == "/old" else (200, {}))
    try:
        hook = endpoint(http, receiver.url("/old"), enabled_events=["task.created"])
        submit(http)
        wait_until(lambda: receiver.snapshot(), message="a first attempt")
        json_of(http.patch(f"/v1/webhooks/{hook['id']}", json={"url": receiver.url("/new")}), 200)
        [received] = receiver.wait_accepted(1)
    finally:
        receiver.close()
    assert received.path == "/new"


# -- per-task callbacks --------------------------------------------------------------


def test_a_callback_gets_the_terminal_event_and_those_asked_for(
    http: httpx.Client, receiver: Receiver
) -> None:
    secret = json_of(http.get("/v1/account/callback-secret"), 200)
    assert secret["object"] == "callback_secret"
    assert secret["secret"].startswith("whsec_")
    assert json_of(http.get("/v1/account/callback-secret"), 200) == secret
    task = submit(http, callback_url=receiver.url("/cb"), callback_events=["task.started"])
    assert task["callback"] == {
        "url": receiver.url("/cb"),
        "events": ["task.started"],
        "status": "pending",
        "attempt_count": 0,
        "delivered_at": None,
        "last_error": None,
    }
    wait_status(http, task["id"], {"completed"})
    accepted = receiver.wait_accepted(2)
    assert [r.event["type"] for r in accepted] == ["task.started", "task.completed"]
    for received in accepted:
        verify(received, secret["secret"])

    def delivered() -> dict[str, Any] | None:
        got = json_of(http.get(f"/v1/tasks/{task['id']}"), 200)
        return got if got["callback"]["status"] == "delivered" else None

    got = wait_until(delivered, message="the callback marked delivered")
    assert got["callback"]["attempt_count"] == 2
    assert got["callback"]["delivered_at"] is not None
    assert got["callback"]["last_error"] is None


def test_a_callback_that_keeps_failing_is_marked_failed(http: httpx.Client) -> None:
    receiver = Receiver(lambda _path, _nth: (500, {}))
    try:
        task = submit(http, callback_url=receiver.url("/cb"), input={"seconds": 0})
        wait_status(http, task["id"], {"completed"})

        def failed() -> dict[str, Any] | None:
            got = json_of(http.get(f"/v1/tasks/{task['id']}"), 200)
            return got if got["callback"]["status"] == "failed" else None

        got = wait_until(failed, timeout=20, message="the callback marked failed")
    finally:
        receiver.close()
    assert got["callback"]["attempt_count"] == 1 + len(SCHEDULE.split(","))
    assert got["callback"]["last_error"] == "http_error"
    assert got["callback"]["delivered_at"] is None


# -- bad input -----------------------------------------------------------------------


def test_unknown_and_foreign_endpoints_and_deliveries(
    srv: ServerProcess, http: httpx.Client, receiver: Receiver
) -> None:
    hook = endpoint(http, receiver.url(), enabled_events=["task.created"])
    submit(http)
    [delivery] = settled(http, hook["id"], 1)
    unknown = "we_01J00000000000000000000000"
    for method, path in [
        ("GET", f"/v1/webhooks/{unknown}/deliveries"),
        ("POST", f"/v1/webhooks/{unknown}/test"),
        ("POST", f"/v1/webhooks/{unknown}/deliveries/{delivery['id']}/retry"),
    ]:
        assert_error(http.request(method, path), 404, "webhook_not_found")
    missing = "del_01J00000000000000000000000"
    assert_error(
        http.post(f"/v1/webhooks/{hook['id']}/deliveries/{missing}/retry"),
        404,
        "delivery_not_found",
    )
    other = quick_account(srv.data_dir, "wd-other")
    with srv.client(other.key) as theirs:
        assert_error(theirs.get(f"/v1/webhooks/{hook['id']}/deliveries"), 404, "webhook_not_found")
        assert_error(theirs.post(f"/v1/webhooks/{hook['id']}/test"), 404, "webhook_not_found")
        assert_error(
            theirs.post(f"/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}/retry"),
            404,
            "webhook_not_found",
        )
    # Nothing was queued by the refused calls.
    assert len(deliveries(http, hook["id"])) == 1


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"cursor": "task_nope"}, "cursor"),
        ({"status": "sent"}, "status"),
    ],
)
def test_bad_delivery_list_parameters(
    http: httpx.Client, receiver: Receiver, params: dict[str, Any], param: str
) -> None:
    hook = endpoint(http, receiver.url())
    response = http.get(f"/v1/webhooks/{hook['id']}/deliveries", params=params)
    assert_error(response, 400, "invalid_param", param=param)


def test_a_disabled_endpoints_delivery_is_not_retried(
    http: httpx.Client, receiver: Receiver
) -> None:
    hook = endpoint(http, receiver.url(), enabled_events=["task.created"])
    submit(http)
    [delivery] = settled(http, hook["id"], 1)
    json_of(http.patch(f"/v1/webhooks/{hook['id']}", json={"status": "disabled"}), 200)
    response = http.post(f"/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}/retry")
    assert_error(response, 409, "webhook_disabled")
    assert deliveries(http, hook["id"]) == [delivery]


def test_deleting_an_endpoint_deletes_its_deliveries(
    srv: ServerProcess, http: httpx.Client, receiver: Receiver
) -> None:
    hook = endpoint(http, receiver.url(), enabled_events=["task.created"])
    submit(http)
    settled(http, hook["id"], 1)
    json_of(http.delete(f"/v1/webhooks/{hook['id']}"), 200)
    left = sql(
        srv.data_dir, "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = ?", hook["id"]
    )
    assert left == [(0,)]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/account/callback-secret",
        "/v1/webhooks/we_01J00000000000000000000000/deliveries",
    ],
)
def test_reading_needs_a_key(srv: ServerProcess, path: str) -> None:
    with srv.client("") as anonymous:
        assert_error(anonymous.get(path), 401, "invalid_api_key")


# -- private callback URLs are refused where the guard is on -------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProcess]:
    yield from module_server(tmp_path_factory, backend)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/cb",
        "http://10.0.0.1/cb",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/cb",
        "http://localhost/cb",
        "ftp://93.184.215.14/cb",
    ],
)
def test_a_private_callback_url_is_refused_and_nothing_is_written(
    guarded: ServerProcess, url: str
) -> None:
    account = quick_account(guarded.data_dir, "wd-guard")
    with guarded.client(account.key) as http:
        response = http.post("/v1/tasks", json={"workflow": "wait", "callback_url": url})
        assert_error(response, 422, "invalid_param", param="callback_url")
        assert json_of(http.get("/v1/tasks"), 200)["data"] == []
    held = sql(guarded.data_dir, "SELECT credits_reserved FROM accounts WHERE id = ?", account.id)
    assert held == [(0,)]


# -- restart ---------------------------------------------------------------------------


def test_pending_deliveries_survive_a_killed_server(data_dir: Path) -> None:
    healthy = False

    def answer(_path: str, _nth: int) -> tuple[int, dict[str, str]]:
        return (200, {}) if healthy else (503, {})

    receiver = Receiver(answer)
    # Retries spaced out enough that the kill lands while they are pending.
    env = {**ENV, "TASKGATE_WEBHOOK_RETRY_SCHEDULE": "0.5,1,1,1,1,1,1,1,1,1"}
    srv = start_server(data_dir, env=env)
    try:
        account = quick_account(srv.data_dir, "wd-kill")
        with srv.client(account.key) as http:
            hook = endpoint(http, receiver.url())
            tasks = [submit(http, input={"seconds": 0}) for _ in range(3)]
            for task in tasks:
                wait_status(http, task["id"], {"completed"})
            # Each task's first event is failing; the rest wait behind it.
            wait_until(
                lambda: len({r.webhook_id for r in receiver.snapshot()}) == 3,
                timeout=20,
                message="a failed attempt of each task's first event",
            )
        srv.signal(signal.SIGKILL)
        srv.process.wait(timeout=10)
        srv.stop()
        healthy = True
        srv = start_server(data_dir, env=env)
        accepted = receiver.wait_accepted(9, timeout=30)
        with srv.client(account.key) as http:
            log = settled(http, hook["id"], 9)
    finally:
        srv.stop()
        receiver.close()
    assert by_task(accepted) == {task["id"]: TASK_EVENTS for task in tasks}
    assert all(d["status"] == "delivered" for d in log)
    for received in accepted:
        verify(received, hook["secret"])


def test_an_endpoint_failing_for_too_long_is_disabled(data_dir: Path) -> None:
    receiver = Receiver(lambda _path, _nth: (500, {}))
    env = {
        **ENV,
        "TASKGATE_WEBHOOK_RETRY_SCHEDULE": ",".join(["0.2"] * 50),
        "TASKGATE_WEBHOOK_DISABLE_AFTER_SECONDS": "1",
    }
    srv = start_server(data_dir, "--no-workers", env=env)
    try:
        account = quick_account(srv.data_dir, "wd-dead")
        with srv.client(account.key) as http:
            hook = endpoint(http, receiver.url(), enabled_events=["task.created"])
            for _ in range(3):
                submit(http)

            def disabled() -> dict[str, Any] | None:
                got = json_of(http.get(f"/v1/webhooks/{hook['id']}"), 200)
                return got if got["status"] == "disabled" else None

            got = wait_until(disabled, timeout=20, message="the endpoint disabled")
            log = settled(http, hook["id"], 3)
            attempts = receiver.snapshot()
            # Disabled means no more attempts, and no deliveries of new events.
            submit(http)
            json_of(http.post(f"/v1/webhooks/{hook['id']}/test"), 202)
            wait_until(
                lambda: any(r.event["type"] == "webhook.test" for r in receiver.snapshot()),
                message="the test event attempted",
            )
            assert len(deliveries(http, hook["id"])) == 4

            # Enabling it again lets a failed delivery be retried.
            json_of(http.patch(f"/v1/webhooks/{hook['id']}", json={"status": "enabled"}), 200)
            receiver.answer = lambda _path, _nth: (200, {})
            first = log[-1]
            json_of(http.post(f"/v1/webhooks/{hook['id']}/deliveries/{first['id']}/retry"), 202)
            [retried] = receiver.wait_accepted(1, path="/hook")
    finally:
        srv.stop()
        receiver.close()
    assert got["disabled_reason"] == "Every delivery failed for 1 second."
    assert all(d["status"] == "failed" for d in log)
    # Attempted when time ran out, or waiting for an attempt when it was disabled.
    assert {d["last_error"] for d in log} <= {"http_error", "endpoint_disabled"}
    assert retried.webhook_id == first["event_id"]
    # While it was disabled only the test event went out (a test is sent regardless);
    # after, the retried delivery.
    after = receiver.snapshot()[len(attempts) :]
    assert {r.event["type"] for r in after} == {"webhook.test", "task.created"}
    assert [r.webhook_id for r in after if r.event["type"] == "task.created"] == [first["event_id"]]


def test_an_attempt_cut_short_by_a_stop_is_made_again_at_the_next_start(
    data_dir: Path,
) -> None:
    first_arrived = threading.Event()
    answer_first = threading.Event()

    def answer(_path: str, nth: int) -> tuple[int, dict[str, str]]:
        if nth == 1:
            # The first attempt hangs until the test lets it go (after the stop).
            first_arrived.set()
            answer_first.wait(60)
        return 200, {}

    receiver = Receiver(answer)
    # An attempt may take long: a lost deliverer's take would last 70 s.
    env = {**ENV, "TASKGATE_WEBHOOK_TIMEOUT_SECONDS": "60"}
    srv = start_server(data_dir, "--no-workers", env=env)
    try:
        account = quick_account(srv.data_dir, "wd-stop")
        with srv.client(account.key) as http:
            hook = endpoint(http, receiver.url(), enabled_events=["task.created"])
            submit(http)
            assert first_arrived.wait(20), "the first attempt never came"
        assert srv.stop() == 0
        srv = start_server(data_dir, "--no-workers", env=env)
        [received] = receiver.wait_accepted(1, timeout=20)
        with srv.client(account.key) as http:
            [delivery] = settled(http, hook["id"], 1)
    finally:
        answer_first.set()
        srv.stop()
        receiver.close()
    assert received.nth == 2
    assert delivery["status"] == "delivered"


def test_a_delivered_completion_links_its_output_files(
    srv: ServerProcess, http: httpx.Client, receiver: Receiver
) -> None:
    hook = endpoint(http, receiver.url(), enabled_events=["task.completed"])
    task = submit(http, input={"seconds": 0, "output_bytes": 64})
    wait_status(http, task["id"], {"completed"})
    [received] = receiver.wait_accepted(1)
    event = verify(received, hook["secret"])
    [entry] = [item for item in event["data"]["output"] if "file_id" in item]
    assert entry["url"].startswith(srv.base_url)
    assert entry["expired"] is False
    # The link opens without a key, like a CDN link.
    with httpx.Client(timeout=30) as anonymous:
        content = anonymous.get(entry["url"])
    assert content.status_code == 200
    assert len(content.content) == 64
