"""noop and announcement runners, and the runner registry's view of every runner module here."""

from __future__ import annotations

import pytest

from st2common.exceptions import RunnerError
from st2common.runners.base import RunContext
from st2actionrunner.runners.announcement import AnnouncementRunner
from st2actionrunner.runners.noop import NoopRunner


def make_ctx(runner_parameters=None, action_parameters=None, publish=None, context=None) -> RunContext:
    return RunContext(
        execution_id="exec-misc", action_ref="core.announcement", pack="core", entry_point="", pack_path=None,
        runner_parameters=runner_parameters or {}, action_parameters=action_parameters or {},
        publish=publish, context=context or {},
    )


def test_noop_succeeds_with_stackstorms_result():
    runner = NoopRunner(make_ctx(action_parameters={"anything": 1}))
    runner.pre_run()
    result = runner.run()
    assert result.status == "succeeded"
    assert result.result == {"failed": False, "succeeded": True, "return_code": 0}


def test_announcement_publishes_the_parameters_on_its_route():
    # Given a publish callback that records what it is given
    published = []
    ctx = make_ctx({"experimental": True, "route": "chatops.alerts"}, {"message": {"text": "deploy done"}},
                   publish=lambda exchange, key, body: published.append((exchange, key, body)),
                   context={"trace_context": {"trace_tag": "t1"}})
    runner = AnnouncementRunner(ctx)
    runner.pre_run()
    result = runner.run()
    # Then one message went to the announcement exchange with the route as routing key
    assert published == [("announcement", "chatops.alerts",
                          {"payload": {"message": {"text": "deploy done"}}, "trace_context": {"trace_tag": "t1"}})]
    assert result.status == "succeeded"
    assert result.result == {"output": {"message": {"text": "deploy done"}}, "message": {"text": "deploy done"}}


def test_announcement_default_route_is_general():
    published = []
    ctx = make_ctx({"experimental": True}, {"message": {}}, publish=lambda *args: published.append(args))
    runner = AnnouncementRunner(ctx)
    runner.pre_run()
    runner.run()
    assert published[0][1] == "general"


def test_announcement_needs_the_experimental_flag():
    runner = AnnouncementRunner(make_ctx({"experimental": False}, publish=lambda *args: None))
    with pytest.raises(RunnerError, match="Experimental flag is missing for action core.announcement"):
        runner.pre_run()


@pytest.mark.parametrize("name", ["local-shell-cmd", "local-shell-script", "python-script", "http-request",
                                  "noop", "announcement"])
def test_registry_resolves_each_runner_to_a_class_named_after_it(name):
    from st2common.runners import registry

    assert registry.resolve(name).name == name
