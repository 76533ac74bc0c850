"""local-shell-cmd and local-shell-script runners, run for real (subprocesses, no database or bus)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import yaml

from st2common.exceptions import RunnerError
from st2common.runners.base import RunContext
from st2common.util.process import pid_alive
from st2actionrunner.runners.local import (
    LocalShellCommandRunner, LocalShellScriptRunner, script_arguments, shell_command,
)

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


def cmd_ctx(cmd: str, output=None, **runner_parameters) -> RunContext:
    return RunContext(
        execution_id="exec-local", action_ref="core.local", pack="core", entry_point="", pack_path=None,
        runner_parameters={"cmd": cmd, **runner_parameters}, action_parameters={},
        output=output or Recorder(),
    )


def script_ctx(pack_path: Path, action_parameters: dict, output=None, **runner_parameters) -> RunContext:
    meta = yaml.safe_load((pack_path / "actions" / "script_args.yaml").read_text())
    return RunContext(
        execution_id="exec-script", action_ref="dummy_pack.script_args", pack="dummy_pack",
        entry_point=meta["entry_point"], pack_path=pack_path, runner_parameters=runner_parameters,
        action_parameters=action_parameters, parameters_schema=meta["parameters"], output=output or Recorder(),
    )


def run(runner):
    runner.pre_run()
    result = runner.run()
    runner.post_run(result)
    return result


def wait_for_file(path: Path, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.01)


def read_pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()]


def assert_all_gone(pids: list[int], deadline: float = 2.0) -> None:
    end = time.monotonic() + deadline
    while any(pid_alive(pid) for pid in pids):
        assert time.monotonic() < end, f"still alive: {[pid for pid in pids if pid_alive(pid)]}"
        time.sleep(0.02)


# A tree: the shell, two children in its group and one that left the group with setsid.
TREE_CMD = (
    "sleep 30 & echo $! >> {pids}; setsid sleep 30 & echo $! >> {pids}; sleep 30 & echo $! >> {pids}; "
    "echo $$ >> {pids}; mv {pids} {pids}.done; wait"
)


def test_command_output_and_result_shape():
    # Given a command that writes to both streams and exits 0
    output = Recorder()
    result = run(LocalShellCommandRunner(cmd_ctx("echo hello; echo oops >&2", output)))
    # Then the result has StackStorm's shape with one trailing newline stripped
    assert result.status == "succeeded"
    assert result.result == {"failed": False, "succeeded": True, "return_code": 0,
                             "stdout": "hello", "stderr": "oops"}
    assert output.stream("stdout") == ["hello\n"] and output.stream("stderr") == ["oops\n"]


def test_json_output_is_parsed_and_exit_code_maps_to_status():
    # Given a command printing JSON and exiting 3
    result = run(LocalShellCommandRunner(cmd_ctx("echo '{\"a\": [1, 2]}'; echo 42 >&2; exit 3")))
    # Then stdout/stderr are JSON-decoded (StackStorm quirk) and the run failed
    assert result.status == "failed"
    assert result.result["stdout"] == {"a": [1, 2]} and result.result["stderr"] == 42
    assert result.result["return_code"] == 3 and result.result["failed"] is True


def test_sigterm_from_outside_means_abandoned():
    # When the command dies of SIGTERM it did not get from us, Then StackStorm calls it abandoned
    result = run(LocalShellCommandRunner(cmd_ctx("kill -TERM $$")))
    assert result.result["return_code"] == -15 and result.status == "abandoned"


def test_lines_are_streamed_in_order_while_running(tmp_path):
    # Given a command that prints 200 lines, then waits for a file that only the output callback creates
    go = tmp_path / "go"

    def on_line(stream, data):
        if data == "line 200\n":
            go.touch()

    output = Recorder(on_line)
    cmd = f"for i in $(seq 1 200); do echo \"line $i\"; done; while [ ! -f {go} ]; do sleep 0.01; done; echo end"
    result = run(LocalShellCommandRunner(cmd_ctx(cmd, output, timeout=20)))
    # Then the run finished (so lines arrived while it ran) and every line came once, in order
    assert result.status == "succeeded"
    assert output.stream("stdout") == [f"line {i}\n" for i in range(1, 201)] + ["end\n"]


def test_cwd_env_and_action_variables(tmp_path):
    # Given cwd and env runner parameters
    ctx = cmd_ctx('pwd; echo "$FOO"; echo "$ST2_ACTION_EXECUTION_ID $ST2_ACTION_PACK_NAME"',
                  cwd=str(tmp_path), env={"FOO": "bar baz"})
    result = run(LocalShellCommandRunner(ctx))
    # Then the command ran there and saw the variables
    assert result.result["stdout"].split("\n") == [str(tmp_path), "bar baz", "exec-local core"]


def test_missing_cwd_is_a_runner_error(tmp_path):
    runner = LocalShellCommandRunner(cmd_ctx("true", cwd=str(tmp_path / "nope")))
    with pytest.raises(RunnerError, match="nope"):
        runner.pre_run()


def test_command_runner_refuses_an_entry_point():
    ctx = cmd_ctx("true")
    ctx.entry_point = "script.sh"
    with pytest.raises(RunnerError, match="only valid for local-shell-script"):
        LocalShellCommandRunner(ctx).pre_run()


def test_timeout_kills_the_whole_tree(tmp_path):
    # Given a command whose tree would sleep 30 s, and a 1 s timeout
    pids = tmp_path / "pids"
    started = time.monotonic()
    result = run(LocalShellCommandRunner(cmd_ctx(TREE_CMD.format(pids=pids), timeout=1)))
    # Then the run ends timed out, well before the sleeps would, with StackStorm's error
    assert result.status == "timeout"
    assert result.result["return_code"] == -9
    assert result.result["error"] == "Action failed to complete in 1 seconds"
    assert time.monotonic() - started < 10
    # And no process of the tree is left, not even the one that left the process group
    assert_all_gone(read_pids(Path(f"{pids}.done")))


def test_cancel_from_another_green_thread_kills_the_tree(tmp_path):
    # Given a running `sleep 30` tree
    pids = tmp_path / "pids"
    runner = LocalShellCommandRunner(cmd_ctx(TREE_CMD.format(pids=pids)))
    runner.pre_run()
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(result=runner.run()))
    thread.start()
    wait_for_file(Path(f"{pids}.done"))
    # When another green thread cancels it
    canceled_at = time.monotonic()
    runner.cancel()
    thread.join(5)
    # Then run() returns canceled within 2 s and no process is left
    assert time.monotonic() - canceled_at < 2
    assert outcome["result"].status == "canceled"
    assert_all_gone(read_pids(Path(f"{pids}.done")))


@pytest.fixture
def pack(tmp_path) -> Path:
    """A copy of the fixture pack (runs may chmod the entry point)."""
    return Path(shutil.copytree(FIXTURE_PACK, tmp_path / "dummy_pack"))


def test_script_positional_and_named_arguments(pack):
    # Given parameters of every kind, in the order a request would carry them
    parameters = {"name": "bob smith", "verbose": True, "quiet": False, "empty": "", "count": 3,
                  "first": "hello world", "flag": True, "items": ["a", "b"]}
    result = run(LocalShellScriptRunner(script_ctx(pack, parameters)))
    # Then named arguments come first (true: a bare flag; false and "" dropped), then positional ones
    assert result.status == "succeeded", result.result
    assert result.result["stdout"].split("\n") == [
        "--name=bob smith", "--verbose", "--count=3", "hello world", "1", "a,b"]


def test_script_kwarg_op_and_missing_positional(pack):
    # Given kwarg_op "-" and no value for some positional parameters
    result = run(LocalShellScriptRunner(script_ctx(pack, {"name": "x", "flag": False}, kwarg_op="-")))
    # Then the prefix changes and missing positional values become empty arguments
    assert result.result["stdout"].split("\n") == ["-name=x", "", "0", ""]


def test_script_is_made_executable(pack):
    script = pack / "actions" / "script_args.sh"
    script.chmod(0o644)
    result = run(LocalShellScriptRunner(script_ctx(pack, {"first": "x"})))
    assert result.status == "succeeded" and os.access(script, os.X_OK)


def test_missing_entry_point_names_the_path(pack):
    # Given an action whose script is not there
    (pack / "actions" / "script_args.sh").unlink()
    runner = LocalShellScriptRunner(script_ctx(pack, {}))
    # Then pre_run refuses with the path in the error
    with pytest.raises(RunnerError) as caught:
        runner.pre_run()
    assert str(pack / "actions" / "script_args.sh") in str(caught.value)


def test_script_arguments_quote_like_stackstorm():
    schema = {"pos": {"type": "object", "position": 0}}
    args = script_arguments({"key3": "date ; whoami", "key4": '"q"', "pos": {"a": 1}}, schema)
    assert args == "--key3='date ; whoami' --key4='\"q\"' '{\"a\": 1}'"


@pytest.mark.parametrize("kwargs,expected", [
    ({}, "ls -la"),
    ({"sudo": True}, "sudo -E -- bash -c 'ls -la'"),
    ({"sudo": True, "sudo_password": "pw"}, "sudo -S -E -- bash -c 'ls -la'"),
    ({"user": "mauser"}, "sudo -E -H -u mauser -- bash -c 'ls -la'"),
    ({"user": "mauser", "sudo_password": "pw"}, "sudo -S -E -H -u mauser -- bash -c 'ls -la'"),
    ({"sudo": True, "user": "mauser"}, "sudo -E -- bash -c 'ls -la'"),
])
def test_sudo_command_forms(kwargs, expected):
    # The password never appears on the command line; StackStorm's forms otherwise
    assert shell_command("ls -la", **kwargs) == expected


FAKE_SUDO = """#!/bin/sh
printf '%s\\n' "$*" > "$FAKE_SUDO_LOG"
case " $* " in *" -S "*) IFS= read -r pw; printf '%s\\n' "$pw" > "$FAKE_SUDO_LOG.pw";; esac
while [ "$1" != "--" ]; do shift; done
shift
exec "$@"
"""


def test_sudo_runs_through_sudo_with_the_password_on_stdin(tmp_path):
    # Given a stand-in `sudo` first on PATH that records how it was called
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "sudo").write_text(FAKE_SUDO)
    (bindir / "sudo").chmod(0o755)
    log = tmp_path / "sudo.log"
    env = {"PATH": f"{bindir}:{os.environ['PATH']}", "FAKE_SUDO_LOG": str(log)}
    # When a command runs with sudo and a sudo password
    result = run(LocalShellCommandRunner(cmd_ctx("echo as root", sudo=True, sudo_password="s3 cret", env=env)))
    # Then it went through `sudo -S -E -- bash -c`, got the password on stdin, and ran
    assert result.status == "succeeded" and result.result["stdout"] == "as root"
    assert log.read_text() == "-S -E -- bash -c echo as root\n"
    assert Path(f"{log}.pw").read_text() == "s3 cret\n"
