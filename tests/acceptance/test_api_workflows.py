"""The workflow catalogue over real HTTP: ``GET /v1/workflows`` and ``/v1/workflows/{name}``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.acceptance.apitools import Account, assert_error, create_account, module_server
from tests.databases import Backend
from tests.helpers import ServerProcess

pytestmark = pytest.mark.acceptance

TEST_WORKFLOWS = {"spin", "stubborn", "boom", "slow", "probe", "metered"}
WORKFLOW_FIELDS = {
    "name",
    "object",
    "title",
    "description",
    "version",
    "queue",
    "timeout_seconds",
    "max_attempts",
    "input_schema",
    "estimate",
    "pricing",
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProcess]:
    yield from module_server(tmp_path_factory, backend, "--no-workers")


@pytest.fixture(scope="module")
def acct(srv: ServerProcess) -> Account:
    return create_account(srv, "catalogue")


@pytest.fixture
def http(srv: ServerProcess, acct: Account) -> Iterator[httpx.Client]:
    with srv.client(acct.key) as client:
        yield client


@pytest.fixture
def catalogue(http: httpx.Client) -> dict[str, dict[str, Any]]:
    response = http.get("/v1/workflows")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"object", "data", "has_more", "next_cursor"}
    assert (body["object"], body["has_more"], body["next_cursor"]) == ("list", False, None)
    names = [wf["name"] for wf in body["data"]]
    assert len(names) == len(set(names)), names
    return {wf["name"]: wf for wf in body["data"]}


def test_the_list_holds_wait_and_the_test_workflows(catalogue: dict[str, Any]) -> None:
    assert {"wait", *TEST_WORKFLOWS} <= set(catalogue)
    for name, wf in catalogue.items():
        assert set(wf) == WORKFLOW_FIELDS, name
        assert wf["object"] == "workflow"
        assert isinstance(wf["title"], str) and wf["title"]
        assert isinstance(wf["version"], str) and wf["version"]
        assert wf["queue"] == "default"
        assert wf["timeout_seconds"] > 0
        assert wf["max_attempts"] >= 1
        assert wf["input_schema"]["type"] == "object"


def test_wait_is_described_in_full(catalogue: dict[str, Any]) -> None:
    wait = catalogue["wait"]
    assert wait["title"] == "Wait"
    assert wait["description"]
    assert (wait["version"], wait["max_attempts"], wait["timeout_seconds"]) == ("1", 3, 3900)
    schema = wait["input_schema"]
    assert schema["additionalProperties"] is False
    properties = schema["properties"]
    assert set(properties) == {
        "seconds",
        "steps",
        "fail",
        "retryable",
        "fail_attempts",
        "output_bytes",
        "credits",
    }
    assert properties["seconds"]["type"] == "number"
    assert (properties["seconds"]["minimum"], properties["seconds"]["maximum"]) == (0, 3600)
    assert properties["steps"]["type"] == "integer"
    assert properties["fail"]["type"] == "boolean"
    assert properties["seconds"]["description"]
    assert wait["estimate"] == {"credits": "0", "seconds": 0}


def test_estimates_follow_the_default_input(catalogue: dict[str, Any]) -> None:
    assert catalogue["stubborn"]["estimate"] == {"credits": "0", "seconds": 60.0}
    assert catalogue["spin"]["estimate"] == {"credits": "0", "seconds": 1.0}
    assert catalogue["probe"]["estimate"] == {"credits": "0", "seconds": 0.0}
    assert catalogue["metered"]["estimate"] == {"credits": "0.5", "seconds": 0.0}


def test_a_price_list_is_published(catalogue: dict[str, Any]) -> None:
    assert catalogue["metered"]["pricing"] == [{"meter": "units", "unit": "unit", "credits": "0.5"}]
    # A workflow without a price list is charged its estimate.
    assert catalogue["wait"]["pricing"] is None
    assert catalogue["boom"]["input_schema"]["properties"] == {}


@pytest.mark.parametrize("name", ["wait", *sorted(TEST_WORKFLOWS)])
def test_get_one_workflow(http: httpx.Client, catalogue: dict[str, Any], name: str) -> None:
    response = http.get(f"/v1/workflows/{name}")
    assert response.status_code == 200, response.text
    assert response.json() == catalogue[name]


@pytest.mark.parametrize("name", ["nope", "WAIT", "wait ", "wait.v2", "%00"])
def test_unknown_workflow(http: httpx.Client, name: str) -> None:
    assert_error(http.get(f"/v1/workflows/{name}"), 404, "workflow_not_found", "workflow")


def test_the_schema_describes_what_submission_accepts(
    http: httpx.Client, catalogue: dict[str, Any]
) -> None:
    """What the schema publishes as the default is what a submission fills in."""
    properties = catalogue["wait"]["input_schema"]["properties"]
    task = http.post("/v1/workflows/wait/tasks", json={}).json()
    for field, spec in properties.items():
        assert task["input"][field] == spec["default"], field
    http.post(f"/v1/tasks/{task['id']}/cancel")
