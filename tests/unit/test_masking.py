"""Secrets kept out of what is stored: templates held at request time, clear values scrubbed at run time.

Plain data only: a small in-memory vault stands in for the datastore's lookup
and decrypt (the integration tests use the real datastore).
"""

from __future__ import annotations

import logging

import pytest

from st2common import masking
from st2common import parameters as params
from st2common.exceptions import ParameterError
from st2common.runners.base import RunResult
from st2common.templating import st2kv_context

KV_SECRET = "kv-planted-4e1b77"
PARAM_SECRET = "param-planted-c0ffee"
MASK = "********"

LOCAL = {"cmd": {"type": "string", "required": True}, "sudo_password": {"type": "string", "secret": True}}


class Vault:
    """Items by name, a secret one stored as "enc:<clear>"; decrypt strips the prefix."""

    def __init__(self, **items: str) -> None:
        self.items = items

    def lookup(self, name, scope, user=None):
        return self.items.get(name)

    def decrypt(self, ciphertext, name=""):
        assert ciphertext.startswith("enc:"), ciphertext
        return ciphertext[4:]


def schema(action=None, runner=LOCAL):
    return params.ParameterSchema.build(runner, action or {}, "pack.action")


def kv(vault=None):
    return st2kv_context(vault or Vault(pw=f"enc:{KV_SECRET}", plain="hello"), "stanley")


# -- the scrubber --------------------------------------------------------------------------------

def test_known_values_are_masked_in_text_and_nested_values():
    scrub = masking.Scrubber([KV_SECRET, "line-one-secret\nline-two-secret", 424242, "ab", True])
    # Whole values, each line of a multi-line one, numbers, in keys and values alike
    assert scrub.text(f"pw={KV_SECRET}!") == f"pw={MASK}!"
    assert scrub.text("got line-two-secret") == f"got {MASK}"
    assert scrub.value({"n": 424242, KV_SECRET: [f"x{KV_SECRET}", 7]}) == {"n": MASK, MASK: [f"x{MASK}", 7]}
    # A JSON-escaped form too
    quoted = masking.Scrubber(['pa"ss\\word'])
    assert quoted.text('{"p": "pa\\"ss\\\\word"}') == '{"p": "********"}'
    # Values too short to mask without destroying the output, and booleans, are left alone
    assert scrub.text("ab True") == "ab True"
    assert not masking.Scrubber(["abc", False, None])


def test_the_longest_secret_is_masked_whole():
    scrub = masking.Scrubber(["secret", "secret-and-more"])
    assert scrub.text("secret-and-more") == MASK


def test_an_output_callback_passes_chunks_on_scrubbed():
    chunks = []
    output = masking.Scrubber([KV_SECRET]).output(lambda stream, data: chunks.append((stream, data)))
    output("stdout", f"pw={KV_SECRET}\n")
    assert chunks == [("stdout", f"pw={MASK}\n")]


# -- request time: templates that read secrets are held ------------------------------------------

def test_a_template_that_decrypts_is_stored_as_it_is_and_others_render():
    merged = schema({"greeting": {"type": "string"}})
    live = params.render_live(merged, {"cmd": "echo {{ st2kv.system.pw | decrypt_kv }}",
                                       "greeting": "{{ 'hel' ~ 'lo' }}"})
    assert live == {"cmd": "echo {{ st2kv.system.pw | decrypt_kv }}", "greeting": "hello"}


def test_a_template_reading_a_secret_parameter_is_held_and_so_is_what_reads_it():
    # Given an action whose parameters refer to a secret one, directly and through another
    merged = schema({
        "token": {"type": "string", "secret": True},
        "header": {"type": "string", "default": "Bearer {{ token }}"},
        "creds": {"type": "object", "properties": {"key": {"type": "string", "secret": True}}},
        "count": {"type": "integer", "required": True},
    })
    # When it is requested with the secret, templates that read it, and a required value held too
    supplied = {"token": PARAM_SECRET, "cmd": "curl -H '{{ header }}'", "creds": {"key": PARAM_SECRET},
                "count": "{{ creds.key | length }}"}
    live = params.render_live(merged, supplied)
    # Then what reads a secret is stored unrendered, the held required one counts as given,
    # and a templated default that reads one is left for the run
    assert live == supplied
    # And at run time they all render from the stored values
    final = params.render_final(merged, live)
    assert final["cmd"] == f"curl -H 'Bearer {PARAM_SECRET}'"
    assert final["count"] == len(PARAM_SECRET)


def test_run_time_keeps_literals_that_only_look_like_templates():
    merged = schema({"a": {"type": "string"}})
    live = params.render_live(merged, {"a": "{% raw %}{{ token }}{% endraw %}", "cmd": "x"})
    assert params.render_final(merged, live)["a"] == "{{ token }}"


# -- run time: what was decrypted is known, and never quoted in an error ------------------------

def test_run_time_rendering_says_what_it_decrypted():
    merged = schema()
    values = params.render_final(merged, {"cmd": "echo {{ st2kv.system.pw | decrypt_kv }} {{ st2kv.system.plain }}"},
                                 extra=kv())
    assert values["cmd"] == f"echo {KV_SECRET} hello"
    assert values.revealed == (KV_SECRET,)


def test_an_error_about_a_value_carrying_a_secret_does_not_quote_it():
    merged = schema({"port": {"type": "integer"}})
    with pytest.raises(ParameterError) as caught:
        params.render_final(merged, {"cmd": "x", "port": "{{ st2kv.system.pw | decrypt_kv }}"}, extra=kv())
    assert caught.value.field == "port" and KV_SECRET not in str(caught.value)
    with pytest.raises(ParameterError) as caught:
        params.render_final(merged, {"cmd": "{{ (st2kv.system.pw | decrypt_kv) ~ nothing }}"}, extra=kv())
    assert KV_SECRET not in str(caught.value)


def test_enum_and_constraint_errors_do_not_quote_a_value_carrying_a_secret():
    merged = schema({"mode": {"type": "string", "enum": ["a", "b"]},
                     "short": {"type": "string", "maxLength": 3}})
    for name in ("mode", "short"):
        with pytest.raises(ParameterError) as caught:
            params.render_final(merged, {"cmd": "x", name: "{{ st2kv.system.pw | decrypt_kv }}"}, extra=kv())
        assert caught.value.field == name and KV_SECRET not in str(caught.value)


# -- a run's guard -------------------------------------------------------------------------------

def test_a_guarded_run_has_its_result_and_log_lines_scrubbed(caplog):
    # Given a run whose parameters decrypted an item and carry a secret parameter, and a secret config value
    merged = schema({"token": {"type": "string", "secret": True}})
    values = params.render_final(merged, {"cmd": "echo {{ st2kv.system.pw | decrypt_kv }}", "token": PARAM_SECRET},
                                 extra=kv())
    scrubber = masking.guard("exec-1", merged, values, ["config-planted-9a9a"])
    try:
        # When the process logs them while the run is in progress
        with caplog.at_level(logging.INFO):
            logging.getLogger("st2.test").info("ran %s with %s and %s", values["cmd"], PARAM_SECRET,
                                               "config-planted-9a9a")
            try:
                raise RuntimeError(f"failed: {KV_SECRET}")
            except RuntimeError:
                logging.getLogger("st2.test").exception("runner failed")
        # Then the log shows none of them
        assert caplog.records and not any(s in caplog.text for s in (KV_SECRET, PARAM_SECRET, "config-planted"))
        assert scrubber.text(values["cmd"]) == f"echo {MASK}"
    finally:
        # And the result the run stores is scrubbed when it is released
        result = masking.release("exec-1", RunResult("succeeded", {"stdout": f"{KV_SECRET} {PARAM_SECRET}"}))
    assert result.result == {"stdout": f"{MASK} {MASK}"}
    # And once released, its values are no longer the log filter's business
    assert masking.scrub_active(KV_SECRET) == KV_SECRET
    assert masking.release("exec-1", RunResult("succeeded", KV_SECRET)).result == KV_SECRET
