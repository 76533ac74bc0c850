"""Secrets never reach a log line."""

import io
import logging

import pytest

from st2common import log


@pytest.mark.parametrize("text,secret", [
    ("connecting to amqp://guest:s3cr3t@rabbit:5672//", "s3cr3t"),
    ('{"password": "hunter2", "user": "bob"}', "hunter2"),
    ("token=abcdef0123 user=bob", "abcdef0123"),
    ("X-Auth-Token: 5f2e9c1d", "5f2e9c1d"),
    ("st2-api-key=ZmFrZWtleQ&x=1", "ZmFrZWtleQ"),
])
def test_mask_secrets(text, secret):
    masked = log.mask_secrets(text)
    assert secret not in masked
    assert log.MASK in masked


def test_filter_masks_formatted_arguments(settings):
    # Given logging set up for a service, When a secret is passed as a %-argument, Then it is masked
    stream = io.StringIO()
    log.setup("test", settings, stream=stream)
    try:
        logging.getLogger("x").warning("login with password=%s", "topsecret")
    finally:
        logging.getLogger().handlers.clear()
    assert "topsecret" not in stream.getvalue()
    assert "password=********" in stream.getvalue()


def test_plain_text_is_untouched():
    assert log.mask_secrets("execution 5f00 succeeded") == "execution 5f00 succeeded"
