"""The matcher's quick pass (rules an instance only misses are passed over without recording why) agrees
with the full evaluation, on every fixture rule against every fixture instance."""

from __future__ import annotations

import pytest
from test_matcher import CONTEXT, INSTANCES, RULES, instance_of

from st2common import matcher


@pytest.mark.parametrize("case", INSTANCES, ids=[case["name"] for case in INSTANCES])
def test_the_quick_pass_skips_exactly_the_plain_misses(case):
    instance = instance_of(case)
    scope = {**CONTEXT, matcher.TRIGGER: instance.payload}
    for rule in RULES:
        # When a rule is evaluated in full, and passed over quickly
        full = matcher.evaluate(rule, instance, CONTEXT)
        may_fire = matcher._may_fire(rule, instance, scope, {})
        # Then a rule the full evaluation matches or cannot evaluate is never passed over, and every
        # plain miss is, unless the rule searches a list (the quick pass leaves those to the full one)
        searches = any(c.operator == "search" for c in rule.criteria)
        if full.matched or full.error:
            assert may_fire, (rule.ref, full.reason)
        elif may_fire:
            assert searches, (rule.ref, full.reason)
