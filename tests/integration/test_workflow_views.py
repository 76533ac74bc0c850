"""How the CLIs show workflows: `st2 run` of a workflow and `st2 execution get` print the workflow's
status and result, then a table of its tasks (subworkflows marked `+ ` with their own tasks indented
under them), the same in the project's CLI as in the official st2client 3.9.0.
"""

from __future__ import annotations

import json
import re

from st2common import statuses
from tests.e2e.st2client_compat import official_st2, run_official  # noqa: F401 (session fixture)
from workflowsupport import api_url, embedded, st2  # noqa: F401 (fixtures)

ANSI = re.compile(r"\x1b\[[0-9;]*m")
HEADER = ["id", "status", "task", "action", "start_timestamp"]


def plain(text: str) -> list[str]:
    """The printed lines without colours or trailing blanks, and without the CLIs' progress dots."""
    lines = [ANSI.sub("", line).rstrip() for line in text.splitlines()]
    return [line for line in lines if line and set(line) != {"."}]


def task_rows(text: str) -> list[list[str]]:
    """The cells of each row of the task table (the id column keeps its indent and `+ ` mark)."""
    rows = []
    for line in plain(text):
        if line.startswith("| ") and not line.startswith("| id "):
            rows.append([cell.rstrip() for cell in line[2:-2].split(" | ")])
    return rows


def shape(rows: list[list[str]]) -> list[tuple[str, str, str, str]]:
    """Each row as (indent and mark, status word, task, action): what two runs of one workflow share."""
    return [(re.sub(r"[0-9a-f]{24}", "", row[0]), row[1].split(" ")[0], row[2], row[3]) for row in rows]


def test_run_prints_the_workflow_and_its_task_tree_as_stackstorm_does(embedded, api_url, official_st2):
    # When a workflow with a subworkflow is run with each CLI
    ours = st2(api_url, "run", "wf_pack.subflow", "pause=0")
    theirs = run_official(["run", "wf_pack.subflow", "pause=0"], api_url)
    # Then both waited for it and exit 0
    assert ours.exit_code == 0, ours.output
    assert theirs.returncode == 0, theirs
    # And both print the workflow's status and result, then the task table with the same columns
    for text in (ours.output, theirs.stdout):
        lines = plain(text)
        assert "status: succeeded" in lines and "result:" in lines and "  output:" in lines
        header = next(line for line in lines if line.startswith("| id "))
        assert [cell.strip() for cell in header.strip("|").split("|")] == HEADER
    # And the same rows: the subworkflow marked `+ `, its five steps indented under it, then the last task
    expected = [("+ ", "succeeded", "inner", "wf_pack.slow_chain")] + [
        ("   ", "succeeded", f"step{i}", "core.local") for i in range(1, 6)] + [
        ("  ", "succeeded", "after", "core.echo")]
    assert shape(task_rows(ours.output)) == expected
    assert shape(task_rows(theirs.stdout)) == expected


def test_execution_get_shows_the_same_tree_in_both_clis(embedded, api_url, official_st2):
    # Given a finished workflow with a subworkflow, and a failed one
    done = embedded.run("wf_pack.subflow", {"pause": 0})
    failed = embedded.run("wf_pack.failing")
    assert (done.status, failed.status) == (statuses.SUCCEEDED, statuses.FAILED)
    for execution in (done, failed):
        # When each CLI gets it
        ours = st2(api_url, "execution", "get", str(execution.pk))
        theirs = run_official(["execution", "get", str(execution.pk)], api_url)
        # Then both print the same lines: attributes, status with its elapsed time, result, task table
        assert ours.exit_code == 0 and theirs.returncode == 0, (ours.output, theirs)
        assert plain(ours.output) == plain(theirs.stdout)
    # And the failed one shows its errors and the task that failed
    lines = plain(st2(api_url, "execution", "get", str(failed.pk)).output)
    assert lines[lines.index("result:") + 1] == "  errors:"
    assert shape(task_rows("\n".join(lines))) == [("", "failed", "task1", "core.local")]


def test_json_views_carry_the_execution_and_its_tasks(embedded, api_url, official_st2):
    # Given a finished workflow
    done = embedded.run("wf_pack.sequential", {"who": "json"})
    # When each CLI gets it as JSON
    ours = st2(api_url, "execution", "get", str(done.pk), "-j")
    theirs = run_official(["execution", "get", str(done.pk), "-j"], api_url)
    # Then both print the workflow, then its tasks, as JSON documents with the same content
    assert ours.exit_code == 0 and theirs.returncode == 0, (ours.output, theirs)
    decoder = json.JSONDecoder()

    def documents(text: str) -> list:
        found, at = [], 0
        text = text.strip()
        while at < len(text):
            value, at = decoder.raw_decode(text, at)
            found.append(value)
            while at < len(text) and text[at].isspace():
                at += 1
        return found

    ours_docs, theirs_docs = documents(ours.output), documents(theirs.stdout)
    assert ours_docs == theirs_docs
    workflow, tasks = ours_docs
    assert workflow["id"] == str(done.pk) and workflow["status"] == statuses.SUCCEEDED
    assert [task["task"] for task in tasks] == ["task1", "task2", "task3"]
