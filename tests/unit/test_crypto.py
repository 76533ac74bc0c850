"""Datastore encryption: StackStorm's key file format and ciphertext, round trips, clear refusals."""

from __future__ import annotations

import io
import json
import os
import stat

import pytest

from st2common import config, ctl
from st2common.exceptions import ConfigError, ValidationError
from st2common.util import crypto

# StackStorm's test key (st2tests/conf/st2_kvstore_tests.crypto.key.json) and a value its
# API tests store pre-encrypted with it (st2api/tests/unit/controllers/v1/test_kvps.py).
ST2_KEY_FILE = ('{"hmacKey": {"hmacKeyString": "685EWJ8U2U_c3Ulv9ibB6aa0Y9aYm-0bCwe2mqjLJuw", "size": 256}, '
                '"aesKeyString": "eKGFrfNEUhAgX0uofaU1wQ", "mode": "CBC", "size": 128}')
ST2_CIPHERTEXT = ("3030303030298D848B45A24EDCD1A82FAB4E831E3FCE6E60956817A48A180E4C040801E"
                  "B30170DACF79498F30520236A629912C3584847098D")
ST2_PLAINTEXT = "S3cret!Value"


@pytest.fixture
def st2_key(tmp_path):
    path = tmp_path / "st2_key.json"
    path.write_text(ST2_KEY_FILE)
    return crypto.read_key(path)


def test_a_value_encrypted_by_stackstorm_decrypts_with_its_key_file(st2_key):
    # Given StackStorm's key file and a value StackStorm encrypted with it
    # When it is decrypted; Then it is StackStorm's clear text
    assert crypto.symmetric_decrypt(st2_key, ST2_CIPHERTEXT) == ST2_PLAINTEXT
    assert crypto.symmetric_decrypt(st2_key, ST2_CIPHERTEXT.lower()) == ST2_PLAINTEXT


@pytest.mark.parametrize("plaintext", ["", "a", "secret", "exactly16bytes!!", "č š hello đ 💩", "x" * 1000])
def test_round_trip_in_stackstorms_format(st2_key, plaintext):
    # When a value is encrypted
    ciphertext = crypto.symmetric_encrypt(st2_key, plaintext)
    # Then it is upper-case hex in keyczar's layout: header, IV, whole AES blocks, a 20-byte HMAC-SHA1
    raw = bytes.fromhex(ciphertext)
    assert ciphertext == ciphertext.upper() and raw[:5] == b"00000"
    padded = (len(plaintext.encode()) // 16 + 1) * 16
    assert len(raw) == 5 + 16 + padded + 20
    # And it decrypts to what went in, while two encryptions differ (a fresh IV each time)
    assert crypto.symmetric_decrypt(st2_key, ciphertext) == plaintext
    assert crypto.symmetric_encrypt(st2_key, plaintext) != ciphertext


def test_a_wrong_key_or_a_corrupted_value_is_a_clear_error(st2_key):
    # Given a value encrypted with another key
    other = crypto.AESKey.generate()
    foreign = crypto.symmetric_encrypt(other, "hello")
    # When it is decrypted with this one; Then the error says the key does not match
    with pytest.raises(ValidationError, match="does not match the datastore key"):
        crypto.symmetric_decrypt(st2_key, foreign)
    # And tampered, truncated and non-hex values are refused too
    tampered = ST2_CIPHERTEXT[:-6] + ("000000" if not ST2_CIPHERTEXT.endswith("000000") else "111111")
    with pytest.raises(ValidationError, match="does not match"):
        crypto.symmetric_decrypt(st2_key, tampered)
    with pytest.raises(ValidationError, match="malformed"):
        crypto.symmetric_decrypt(st2_key, ST2_CIPHERTEXT[:40])
    with pytest.raises(ValidationError, match="not hex"):
        crypto.symmetric_decrypt(st2_key, "corrupted")


def test_key_files_are_generated_owner_only_in_stackstorms_format(tmp_path):
    # When a key file is written into a folder that does not exist yet
    path = tmp_path / "keys" / "datastore_key.json"
    assert crypto.write_key_file(path) is True
    # Then only its owner may read it, and it is keyczar's JSON with a 256-bit AES key
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    data = json.loads(path.read_text())
    assert set(data) == {"hmacKey", "aesKeyString", "mode", "size"}
    assert data["mode"] == "CBC" and data["size"] == 256 and data["hmacKey"]["size"] == 256
    key = crypto.read_key(path)
    assert len(key.aes_key_bytes) == 32
    # And a second call keeps the existing key
    before = path.read_text()
    assert crypto.write_key_file(path) is False
    assert path.read_text() == before
    assert crypto.symmetric_decrypt(crypto.read_key(path), crypto.symmetric_encrypt(key, "kept")) == "kept"


def test_missing_or_malformed_key_files_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist") as missing:
        crypto.read_key(tmp_path / "absent.json")
    assert missing.value.option == "encryption_key_path"
    bad = tmp_path / "bad.json"
    bad.write_text('{"aesKeyString": "abc"}')
    with pytest.raises(ConfigError, match=str(bad)):
        crypto.read_key(bad)
    short = tmp_path / "short.json"
    short.write_text(ST2_KEY_FILE.replace('"size": 128', '"size": 256'))
    with pytest.raises(ConfigError, match="declared 256"):
        crypto.read_key(short)


def test_a_key_never_shows_its_material(st2_key):
    assert st2_key.aes_key_string not in repr(st2_key)
    assert st2_key.hmac_key_string not in repr(st2_key)


def test_st2ctl_start_generates_the_key_file_once(tmp_path):
    # Given a platform whose datastore key file does not exist yet
    settings = config.load(path=None, env={"ST2_SYSTEM__BASE_PATH": str(tmp_path)})
    out = io.StringIO()
    console = ctl.Console(out, io.StringIO())
    # When st2ctl start prepares the platform; Then the key file appears, owner-only, and it says so
    assert ctl.ensure_datastore_key(settings, console) is True
    path = settings.keyvalue.encryption_key_path
    assert path == tmp_path / "var" / "keys" / "datastore_key.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert f"generated {path}" in out.getvalue()
    # And the next start keeps it
    before = path.read_text()
    assert ctl.ensure_datastore_key(settings, ctl.Console(io.StringIO(), io.StringIO())) is True
    assert path.read_text() == before
    # And with encryption off nothing is written
    off = config.load(path=None, env={"ST2_SYSTEM__BASE_PATH": str(tmp_path / "off"),
                                      "ST2_KEYVALUE__ENABLE_ENCRYPTION": "false"})
    assert ctl.ensure_datastore_key(off, console) is True
    assert not off.keyvalue.encryption_key_path.exists()
