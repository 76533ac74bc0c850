"""GET /v1/executions/{id} renders the stored record without building an ExecutionDB, and reads only
the fields an include_attributes list needs: every view must equal the one rendered from the document.
"""

from __future__ import annotations

import datetime
import json

import pytest
from test_api_support import (  # noqa: F401 (fixtures)
    NESTED_SECRET, SECRET, api, api_settings, publisher, settings,
)

from st2api.controllers.v1.executions import ExecutionsController
from st2common.models.api import execution as execution_api
from st2common.models.db.execution import ExecutionDB
from st2common.persistence.access import Access

WEB_URL = "https://st2.example.com"
SECRETIVE = {"action": "apitest.secretive",
             "parameters": {"password": SECRET, "creds": {"token": NESTED_SECRET, "user": "ann"}}}
# Keys MongoDB cannot hold as they are (stored escaped), ObjectIds and dates inside results.
RESULT = {"stdout": "hi", "return_code": 0, "a.b": {"$c": [1, {"d.e": "f"}]}}

VIEWS = [
    "", "?include_attributes=status", "?include_attributes=status,start_timestamp,end_timestamp,log",
    "?include_attributes=action.ref,status", "?include_attributes=liveaction",
    "?include_attributes=parameters", "?include_attributes=result", "?include_attributes=elapsed_seconds",
    "?include_attributes=web_url", "?include_attributes=id,context.user,runner.name",
    "?include_attributes=liveaction.parameters,action.parameters", "?exclude_attributes=result",
    "?exclude_attributes=result,trigger_instance", "?max_result_size=10", "?max_result_size=100000",
    "?show_secrets=true", "?show_secrets=true&include_attributes=liveaction",
]


@pytest.fixture
def stored(api):
    """A finished execution with secret parameters, escaped keys in its parameters and result, and a parent."""
    parent = api.post_json("/v1/executions", {"action": "core.noop"}, status=201).json
    requested = api.post_json("/v1/executions", {"user": None, **SECRETIVE}, status=201).json
    execution = ExecutionDB.objects.get(id=requested["id"])
    execution.status = "succeeded"
    execution.end_timestamp = execution.start_timestamp + datetime.timedelta(seconds=1.25)
    execution.result = RESULT
    execution.result_size = len(json.dumps(RESULT))
    execution.parent = parent["id"]
    execution.context = dict(execution.context, **{"x.y": {"$z": 1}})
    return Access(ExecutionDB).add_or_update(execution)


def rendered_from_document(doc: ExecutionDB, query: str) -> dict:
    """What GET /executions/{id}<query> answered when it rendered the whole ExecutionDB."""
    params = dict(part.split("=", 1) for part in query.lstrip("?").split("&") if part)
    include = [p for p in params.get("include_attributes", "").split(",") if p]
    exclude = [p for p in params.get("exclude_attributes", "").split(",") if p]
    data = execution_api.to_api(doc, mask_secrets=params.get("show_secrets") != "true", web_url_base=WEB_URL)
    data = ExecutionsController.shape(ExecutionsController.__new__(ExecutionsController), data, include, exclude)
    if "max_result_size" in params and doc.result_size > int(params["max_result_size"]):
        data.pop("result", None)
    return data


@pytest.mark.parametrize("query", VIEWS)
def test_each_view_equals_the_one_rendered_from_the_document(api, stored, query):
    # When the execution is read through the API in this view
    answer = api.get(f"/v1/executions/{stored.pk}{query}").json
    # Then it is what rendering the stored document gives, secrets masked unless shown
    assert answer == rendered_from_document(ExecutionDB.objects.get(id=stored.pk), query)


def test_escaped_keys_and_masked_secrets_read_back_as_posted(api, stored):
    answer = api.get(f"/v1/executions/{stored.pk}").json
    assert answer["result"] == RESULT
    assert answer["context"]["x.y"] == {"$z": 1}
    assert answer["parameters"]["creds"] == {"token": "********", "user": "ann"}
    assert answer["liveaction"]["parameters"]["password"] == "********"
    assert answer["elapsed_seconds"] == 1.25
    # A status poll reads and answers the status alone
    assert api.get(f"/v1/executions/{stored.pk}?include_attributes=status").json == {
        "id": str(stored.pk), "status": "succeeded"}


def test_last_and_unknown_ids(api, stored):
    newest = api.post_json("/v1/executions", {"action": "core.noop"}, status=201).json
    assert api.get("/v1/executions/last?include_attributes=status").json == {"id": newest["id"],
                                                                             "status": "requested"}
    missing = api.get("/v1/executions/" + "0" * 24, status=404).json
    assert missing["faultstring"] == f'Unable to identify resource with id "{"0" * 24}".'
    assert api.get("/v1/executions/not-an-id", status=404).json["faultstring"].endswith('"not-an-id".')
