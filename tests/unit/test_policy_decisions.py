"""The pure policy decisions (st2actionrunner.policies) and policy validation (st2common.content.policies)."""

from __future__ import annotations

import pytest

from st2actionrunner import policies
from st2common import statuses
from st2common.content.policies import POLICY_TYPES, check_parameters, parse_policy
from st2common.exceptions import ContentError


@pytest.mark.parametrize("params, running, expected", [
    ({"threshold": 2}, 0, policies.SCHEDULE),
    ({"threshold": 2}, 1, policies.SCHEDULE),
    ({"threshold": 2}, 2, policies.DELAY),
    ({"threshold": 2, "action": "delay"}, 5, policies.DELAY),
    ({"threshold": 1, "action": "cancel"}, 1, policies.CANCEL),
    ({"threshold": 1, "action": "cancel"}, 0, policies.SCHEDULE),
    ({"threshold": 0}, 0, policies.DELAY),
])
def test_concurrency_decision_follows_threshold_and_action(params, running, expected):
    assert policies.concurrency_decision(params, running) == expected


@pytest.mark.parametrize("decisions, expected", [
    ([], policies.SCHEDULE),
    ([policies.SCHEDULE, policies.SCHEDULE], policies.SCHEDULE),
    ([policies.SCHEDULE, policies.DELAY], policies.DELAY),
    ([policies.DELAY, policies.CANCEL], policies.CANCEL),
])
def test_several_policies_combine_to_the_strictest(decisions, expected):
    assert policies.combine(decisions) == expected


def test_concurrency_keys_count_per_policy_or_per_attribute_values():
    plain = policies.concurrency_key("p.c", policies.CONCURRENCY, {"threshold": 1}, {"host": "a"})
    assert plain == "p.c"
    attr = {"threshold": 1, "attributes": ["host"]}
    a1 = policies.concurrency_key("p.c", policies.CONCURRENCY_BY_ATTR, attr, {"host": "a", "other": 1})
    a2 = policies.concurrency_key("p.c", policies.CONCURRENCY_BY_ATTR, attr, {"host": "a", "other": 2})
    b = policies.concurrency_key("p.c", policies.CONCURRENCY_BY_ATTR, attr, {"host": "b"})
    assert a1 == a2 != b and a1.startswith("p.c:")


def test_rechecks_back_off_up_to_a_cap():
    waits = [policies.recheck_after(n) for n in range(6)]
    assert waits == sorted(waits) and waits[0] == policies.RECHECK_FIRST and waits[-1] == policies.RECHECK_MAX


RETRY = {"retry_on": "failure", "max_retry_count": 2, "delay": 1.5}


@pytest.mark.parametrize("params, status, context, parent, expected_count", [
    (RETRY, statuses.FAILED, {}, False, 1),
    (RETRY, statuses.FAILED, {"policies": {"retry": {"retry_count": 1}}}, False, 2),
    (RETRY, statuses.FAILED, {"policies": {"retry": {"retry_count": 2}}}, False, None),
    (RETRY, statuses.TIMED_OUT, {}, False, None),
    (RETRY, statuses.SUCCEEDED, {}, False, None),
    (RETRY, statuses.FAILED, {}, True, None),
    ({"retry_on": "timeout", "max_retry_count": 1}, statuses.TIMED_OUT, {}, False, 1),
    ({"retry_on": "timeout", "max_retry_count": 1}, statuses.FAILED, {}, False, None),
])
def test_retry_decision(params, status, context, parent, expected_count):
    decision = policies.retry_decision("pk.retry", params, "e1", status, context, parent)
    if expected_count is None:
        assert decision is None
        return
    assert decision.retry_count == expected_count
    assert decision.context["policies"]["retry"] == {"applied_policy": "pk.retry", "retry_count": expected_count,
                                                     "retried_liveaction_id": "e1"}


def test_a_retry_keeps_the_context_and_waits_the_delay():
    context = {"user": "alice", "trace_context": {"trace_tag": "t"}, "re-run": {"ref": "x"}}
    decision = policies.retry_decision("pk.retry", RETRY, "e1", statuses.FAILED, context, False)
    assert decision.delay_ms == 1500
    assert decision.context["user"] == "alice" and decision.context["trace_context"] == {"trace_tag": "t"}
    assert "re-run" not in decision.context
    assert policies.retry_decision("pk.retry", {"retry_on": "failure"}, "e", statuses.FAILED, {},
                                   False).delay_ms is None


# -- validation ---------------------------------------------------------------------------------


def test_policy_parameters_get_the_types_defaults_and_bad_ones_are_named():
    assert check_parameters("action.concurrency", {"threshold": 3}) == {"threshold": 3, "action": "delay"}
    assert check_parameters("action.retry", {"retry_on": "timeout"})["max_retry_count"] == 2
    with pytest.raises(ContentError, match='"threshold" is a required parameter') as missing:
        check_parameters("action.concurrency", {})
    assert missing.value.field == "parameters.threshold"
    with pytest.raises(ContentError) as bad:
        check_parameters("action.retry", {"retry_on": "failure", "max_retry_count": 9})
    assert bad.value.field == "parameters.max_retry_count"
    with pytest.raises(ContentError, match='"limit" is not a parameter of action.concurrency'):
        check_parameters("action.concurrency", {"threshold": 1, "limit": 2})


def test_a_policy_names_an_unknown_action_or_type():
    doc = {"name": "p", "pack": "pk", "resource_ref": "pk.act", "policy_type": "action.concurrency",
           "parameters": {"threshold": 1}}
    assert parse_policy(doc, None, lambda ref: True).ref == "pk.p"
    with pytest.raises(ContentError, match='action "pk.act" referenced by resource_ref is not registered') as exc:
        parse_policy(doc, None, lambda ref: False)
    assert exc.value.field == "resource_ref"
    with pytest.raises(ContentError, match='policy type "action.throttle" is not known') as exc:
        parse_policy(dict(doc, policy_type="action.throttle"), None, lambda ref: True)
    assert exc.value.field == "policy_type"
    assert set(POLICY_TYPES) == {"action.concurrency", "action.concurrency.attr", "action.retry"}
