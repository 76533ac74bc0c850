"""python-script runner: the fixture pack's actions in real warm worker interpreters (no database or bus)."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
import yaml

from st2common.exceptions import RunnerError
from st2common.runners.base import RunContext
from st2common.runners.base_action import Action, MissingConfigItemError
from st2common.util.process import pid_alive
from st2actionrunner.runners import python as python_runner
from st2actionrunner.runners.python import PythonRunner

FIXTURE_PACK = Path(__file__).resolve().parent.parent / "fixtures" / "packs" / "dummy_pack"


class Recorder:
    """An output callback that keeps (stream, data) in arrival order."""

    def __init__(self, on_line=None):
        self.lines: list[tuple[str, str]] = []
        self.on_line = on_line

    def __call__(self, stream: str, data: str) -> None:
        self.lines.append((stream, data))
        if self.on_line:
            self.on_line(stream, data)

    def stream(self, name: str) -> list[str]:
        return [data for stream, data in self.lines if stream == name]


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    """One copy of the fixture pack per module, so its workers stay warm between tests."""
    return Path(shutil.copytree(FIXTURE_PACK, tmp_path_factory.mktemp("packs") / "dummy_pack"))


def make_ctx(pack: Path, action: str, parameters: dict | None = None, output=None, config=None,
             **runner_parameters) -> RunContext:
    meta = yaml.safe_load((pack / "actions" / f"{action}.yaml").read_text())
    defaults = {name: attrs["default"] for name, attrs in (meta.get("parameters") or {}).items()
                if "default" in attrs}
    return RunContext(
        execution_id=f"exec-{action}", action_ref=f"dummy_pack.{action}", pack="dummy_pack",
        entry_point=meta["entry_point"], pack_path=pack, runner_parameters=runner_parameters,
        action_parameters={**defaults, **(parameters or {})}, parameters_schema=meta.get("parameters") or {},
        config=config or {}, output=output or Recorder(),
    )


def run(ctx: RunContext):
    runner = PythonRunner(ctx)
    runner.pre_run()
    result = runner.run()
    runner.post_run(result)
    return result


def assert_all_gone(pids: list[int], deadline: float = 2.0) -> None:
    end = time.monotonic() + deadline
    while any(pid_alive(pid) for pid in pids):
        assert time.monotonic() < end, f"still alive: {[pid for pid in pids if pid_alive(pid)]}"
        time.sleep(0.02)


def wait_for_file(path: Path, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.01)


def test_action_returning_a_dict(pack):
    # Given an action that uses a helper from actions/lib
    result = run(make_ctx(pack, "return_dict", {"name": "ops", "count": 2}))
    # Then it succeeds with StackStorm's result shape and the dict under "result"
    assert result.status == "succeeded"
    assert set(result.result) == {"stdout", "stderr", "exit_code", "result"}
    assert result.result["exit_code"] == 0 and result.result["stdout"] == ""
    value = result.result["result"]
    assert value["greeting"] == "hello ops" and value["values"] == {"name": "ops", "count": 2}
    assert value["execution_id"] == "exec-return_dict"


def test_worker_stays_warm_and_env_does_not_leak(pack):
    # Given two runs of the same pack, the first with an env runner parameter
    first = run(make_ctx(pack, "return_dict", env={"FOO": "bar", "PYTHONPATH": "/ignored"}))
    second = run(make_ctx(pack, "return_dict"))
    # Then the same warm interpreter ran both, the first saw FOO and the second did not
    assert first.result["result"]["pid"] == second.result["result"]["pid"]
    assert first.result["result"]["foo_env"] == "bar"
    assert second.result["result"]["foo_env"] is None


def test_worker_is_recycled_after_max_runs(pack, monkeypatch):
    # Given a pool that retires a worker after 2 runs
    monkeypatch.setattr(python_runner.POOL, "max_runs", 2)
    pids = [run(make_ctx(pack, "return_dict")).result["result"]["pid"] for _ in range(5)]
    # Then no interpreter ran more than 2 of the runs and retired ones exit
    assert max(pids.count(pid) for pid in pids) <= 2
    assert_all_gone(sorted(set(pids) - {pids[-1]}), deadline=6)


def test_concurrent_runs_of_one_pack_use_separate_workers(pack, tmp_path):
    # Given a run of the pack that is blocked until we let it go
    go = tmp_path / "go"
    blocked = {}
    thread = threading.Thread(target=lambda: blocked.update(
        result=run(make_ctx(pack, "print_output", {"lines": 2, "wait_for": str(go)}, timeout=20))))
    thread.start()
    # When another run of the same pack comes meanwhile
    other = run(make_ctx(pack, "return_dict"))
    # Then it is served by another worker at once, and the blocked one still finishes
    assert other.status == "succeeded" and thread.is_alive()
    go.touch()
    thread.join(10)
    assert blocked["result"].status == "succeeded" and blocked["result"].result["result"] == 2


def test_exception_fails_with_the_traceback(pack):
    result = run(make_ctx(pack, "raise_error", {"message": "disk is full"}))
    assert result.status == "failed"
    assert result.result["exit_code"] == 1 and result.result["result"] is None
    assert "Traceback (most recent call last)" in result.result["stderr"]
    assert "RuntimeError: disk is full" in result.result["stderr"]
    assert result.result["stdout"] == "about to fail\n"
    # And the worker survived its action's exception
    assert run(make_ctx(pack, "return_dict")).status == "succeeded"


def test_false_status_tuple_fails_with_the_value(pack):
    result = run(make_ctx(pack, "return_false"))
    assert result.status == "failed"
    assert result.result["result"] == {"reason": "the check did not pass"} and result.result["exit_code"] == 0


def test_non_bool_status_is_a_runner_error(pack):
    with pytest.raises(RunnerError, match="must either be True or False"):
        run(make_ctx(pack, "bad_status"))


def test_output_lines_stream_in_order_while_running(pack, tmp_path):
    # Given an action that prints a line, then waits for a file only the output callback creates
    go = tmp_path / "go"
    output = Recorder(lambda stream, data: go.touch() if data == "line 1\n" else None)
    result = run(make_ctx(pack, "print_output", {"lines": 5, "wait_for": str(go)}, output, timeout=20))
    # Then it finished (the first line arrived while it ran) and lines came in order, last partial one too
    assert result.status == "succeeded" and result.result["result"] == 5
    expected = [f"line {n}\n" for n in range(1, 6)] + ["no newline at the end"]
    assert output.stream("stdout") == expected
    assert result.result["stdout"] == "".join(expected)
    # And self.logger wrote to stderr as actions.python.<ClassName>
    assert output.stream("stderr") == ["actions.python.PrintOutput: INFO     printed 5 lines\n"]


def test_log_level_parameter_filters_the_action_logger(pack):
    result = run(make_ctx(pack, "print_output", {"lines": 1}, log_level="WARNING"))
    assert result.result["stderr"] == ""


def test_config_is_self_config(pack):
    config = {"region": "us-east-2", "api_key": "k"}
    result = run(make_ctx(pack, "read_config", {"key": "region"}, config=config))
    assert result.result["result"] == {"value": "us-east-2", "keys": ["api_key", "region"]}


def test_missing_config_item_names_the_key(pack):
    result = run(make_ctx(pack, "read_config", {"key": "nope"}, config={"region": "x"}))
    assert result.status == "failed"
    assert 'missing key "nope"' in result.result["stderr"]


def test_timeout_kills_worker_and_children(pack, tmp_path):
    # Given an action that starts a child `sleep 30` and sleeps, with a 1 s timeout
    pid_file = tmp_path / "pids"
    result = run(make_ctx(pack, "sleep", {"seconds": 30, "pid_file": str(pid_file)}, timeout=1))
    # Then it ends timed out with StackStorm's error, and neither the worker nor the child is left
    assert result.status == "timeout"
    assert result.result["error"] == "Action failed to complete in 1 seconds"
    assert_all_gone([int(pid) for pid in pid_file.read_text().split()])
    # And the next run gets a fresh worker
    assert run(make_ctx(pack, "return_dict")).status == "succeeded"


def test_cancel_from_another_green_thread(pack, tmp_path):
    pid_file = tmp_path / "pids"
    runner = PythonRunner(make_ctx(pack, "sleep", {"seconds": 30, "pid_file": str(pid_file)}))
    runner.pre_run()
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(result=runner.run()))
    thread.start()
    wait_for_file(pid_file)
    # When another green thread cancels the run
    canceled_at = time.monotonic()
    runner.cancel()
    thread.join(5)
    # Then it ends canceled within 2 s, with no process left
    assert time.monotonic() - canceled_at < 2
    assert outcome["result"].status == "canceled"
    assert_all_gone([int(pid) for pid in pid_file.read_text().split()])


def test_worker_dying_mid_run_fails_the_run(pack, tmp_path):
    # Given an action whose interpreter exits hard
    script = pack / "actions" / "hard_exit.py"
    script.write_text("import os\nfrom st2common.runners.base_action import Action\n\n\n"
                      "class HardExit(Action):\n    def run(self):\n        print('bye', flush=True)\n"
                      "        os._exit(7)\n")
    ctx = make_ctx(pack, "return_dict")
    ctx.entry_point = "hard_exit.py"
    ctx.action_parameters = {}
    result = run(ctx)
    assert result.status == "failed"
    assert result.result["exit_code"] == 7 and result.result["stdout"] == "bye\n"


def test_missing_entry_point_names_the_path(pack):
    ctx = make_ctx(pack, "return_dict")
    ctx.entry_point = "not_there.py"
    with pytest.raises(RunnerError) as caught:
        PythonRunner(ctx).pre_run()
    assert str(pack / "actions" / "not_there.py") in str(caught.value)


def test_pack_config_dict_in_process():
    # The pack-facing class works in-process too: missing keys name the config file
    class Probe(Action):
        def run(self):
            return self.config["absent"]

    probe = Probe(config={"present": 1})
    assert probe.config["present"] == 1 and probe.logger.name == "actions.python.Probe"
    with pytest.raises(MissingConfigItemError) as caught:
        probe.run()
    assert isinstance(caught.value, KeyError) and "absent" in str(caught.value)
