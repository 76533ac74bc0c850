"""The shipped examples pack: it registers, its Orquesta workflows pass inspection, its ActionChains
are valid and name registered actions, and examples of each kind run to success on the platform."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from st2common import statuses
from st2common.models.db.action import ActionDB
from st2common.persistence.access import Access
from st2common.services import workflows
from st2workflowengine.actionchain import parse
from workflowsupport import REPO, start_platform

EXAMPLES = REPO / "contrib" / "packs" / "examples"


def example_actions(runner: str) -> list[Path]:
    """The examples pack's action metadata files of one runner type."""
    found = [path for path in sorted((EXAMPLES / "actions").glob("*.yaml"))
             if yaml.safe_load(path.read_text())["runner_type"] == runner]
    assert found, runner
    return found


def definition_of(metadata: Path) -> Path:
    return EXAMPLES / "actions" / yaml.safe_load(metadata.read_text())["entry_point"]


@pytest.fixture
def examples(tmp_path, embedded_mongo):
    """The shipped packs registered; an action runner and a workflow engine consuming here."""
    yield from start_platform("filesystem://", tmp_path, embedded_mongo, pack=None)


def test_examples_register_and_pass_inspection(examples):
    # Given the examples pack registered
    registered = {a.name for a in Access(ActionDB).query({"pack": "examples"})}
    assert {p.stem for p in (EXAMPLES / "actions").glob("*.yaml")} == registered
    # Then every Orquesta example passes the checks of POST /v1/workflows/inspect
    for metadata in example_actions("orquesta"):
        assert workflows.inspect(definition_of(metadata).read_text()) == [], metadata.name
    # And every ActionChain example is a valid chain whose nodes name registered actions
    for metadata in example_actions("action-chain"):
        spec = parse(definition_of(metadata).read_text(), source=metadata.name)
        assert all(Access(ActionDB).get(ref=node.ref) is not None for node in spec.nodes), metadata.name


@pytest.mark.parametrize("ref, parameters, expected", [
    ("examples.orquesta-sequential", {"name": "you"}, {"output": {"greeting": "Hello, you", "message": "HELLO, YOU"}}),
    ("examples.orquesta-with-items", {}, {"output": {"replies": ["Hi ann", "Hi bob", "Hi cid"]}}),
    ("examples.orquesta-join", {}, {"output": {"combined": "left + right"}}),
    ("examples.orquesta-error-handling", {}, {"output": {"outcome": "failed with exit code 1"}}),
])
def test_orquesta_examples_run_to_success(examples, ref, parameters, expected):
    execution = examples.run(ref, parameters)
    assert execution.status == statuses.SUCCEEDED, execution.result
    assert execution.result == expected


@pytest.mark.parametrize("ref, parameters, published", [
    ("examples.chain-greeting", {"name": "you"}, {"greeting": "Hello, you!", "shouted": "HELLO, YOU!"}),
    ("examples.chain-error-handling", {}, {"exit_code": "1"}),
    ("examples.chain-runs-workflow", {}, {"message": "HELLO, STANLEY"}),
])
def test_chain_examples_run_to_success(examples, ref, parameters, published):
    execution = examples.run(ref, parameters)
    assert execution.status == statuses.SUCCEEDED, execution.result
    assert execution.result["published"] == published
    assert all(task["state"] in (statuses.SUCCEEDED, statuses.FAILED) for task in execution.result["tasks"])
