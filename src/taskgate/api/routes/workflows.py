"""``/v1/workflows``: the catalogue."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from taskgate.api.deps import CallerDep
from taskgate.api.presenters import workflow_object
from taskgate.api.responses import ERROR_RESPONSES, json_response
from taskgate.core.errors import WorkflowNotFound
from taskgate.payloads import ListObject, WorkflowObject

router = APIRouter(prefix="/v1/workflows", tags=["workflows"], responses=ERROR_RESPONSES)


@router.get("", response_model=ListObject, operation_id="list_workflows")
async def list_workflows(caller: CallerDep) -> Response:
    """Every workflow: input schema, price estimate and expected seconds."""
    data = [workflow_object(wf) for wf in caller.services.registry]
    return json_response({"object": "list", "data": data, "has_more": False, "next_cursor": None})


@router.get("/{name}", response_model=WorkflowObject, operation_id="get_workflow")
async def get_workflow(name: str, caller: CallerDep) -> Response:
    wf = caller.services.registry.get(name)
    if wf is None:
        raise WorkflowNotFound(name)
    return json_response(workflow_object(wf))
