"""mask_secrets skips its regexes for lines that cannot match them; the lines it masks are the same."""

import random

import pytest

from st2common import log


def _by_regexes(text: str) -> str:
    """What mask_secrets answered before its shortcut: both substitutions, always."""
    text = log._URL_PASSWORD_RE.sub(lambda m: m.group("pre") + log.MASK + m.group("at"), text)
    return log._SECRET_RE.sub(lambda m: m.group("key") + m.group("quote") + log.MASK, text)


@pytest.mark.parametrize("text", [
    "execution 6740a1b2c3d4e5f601234567 of core.noop requested by st2admin",
    "PASSWORD=hunter2",
    'header "X-Auth-Token": abc',
    "connecting to mongodb://user:pw@db:27017/st2",
    "to\u212aen=abc",  # a Kelvin sign, which IGNORECASE matches as k
    "pa\u017fsword: hunter2",  # a long s, which IGNORECASE matches as s
    "caf\u00e9 password=x",
    "",
])
def test_lines_are_masked_exactly_as_by_the_regexes(text):
    assert log.mask_secrets(text) == _by_regexes(text)


def test_random_lines_built_from_keys_and_noise_are_masked_as_by_the_regexes():
    # Given lines mixing secret keys in any case, separators, URLs and plain words
    pieces = list(log.SECRET_KEYS) + ["Token", "PassWord", "API_KEY", "=", ":", '"', " ", "x", "abc123",
                                      "://", "amqp://u:p@h", "user", "\u212a", "\u017f", "\u00e9", ",", "}"]
    rng = random.Random(7)
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        # Then each is masked exactly as the two regexes alone mask it
        assert log.mask_secrets(text) == _by_regexes(text), text
