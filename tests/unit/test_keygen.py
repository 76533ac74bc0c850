"""st2-generate-symmetric-crypto-key, as docker-compose's keygen step and operators run it."""

from __future__ import annotations

import io
import stat

from st2common import keygen
from st2common.util import crypto


def run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    return keygen.main(list(args), out=out), out.getvalue()


def test_the_key_is_written_readable_by_its_owner_only(tmp_path):
    # When the tool writes a key into a folder that does not exist yet
    path = tmp_path / "keys" / "datastore_key.json"
    code, said = run("-k", str(path))
    # Then it is a working key, mode 0600, in a folder only its owner can enter
    assert code == 0 and str(path) in said
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    key = crypto.read_key(path)
    assert crypto.symmetric_decrypt(key, crypto.symmetric_encrypt(key, "x")) == "x"


def test_an_existing_key_is_kept_unless_forced(tmp_path):
    # Given a key
    path = tmp_path / "datastore_key.json"
    assert run("-k", str(path))[0] == 0
    first = path.read_text()
    # When the tool runs again as compose runs it on every start, Then it succeeds and keeps the key
    assert run("-k", str(path), "--if-missing")[0] == 0
    assert path.read_text() == first
    # And without a flag it refuses, with StackStorm's exit code
    assert run("-k", str(path))[0] == keygen.EXISTS
    assert path.read_text() == first
    # And --force writes a new key, keeping the old one beside it
    code, said = run("-k", str(path), "--force")
    assert code == 0 and "Backed up" in said
    assert path.read_text() != first
    backups = list(tmp_path.glob("datastore_key.json.bkup-*"))
    assert [b.read_text() for b in backups] == [first]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_without_a_path_the_config_names_it(tmp_path):
    # Given a config whose [keyvalue] encryption_key_path is relative to it
    conf = tmp_path / "st2.conf"
    conf.write_text("[keyvalue]\nencryption_key_path = keys/k.json\n")
    # When the tool runs with that config
    code, _ = run("--config-file", str(conf))
    # Then the key is where the config says
    assert code == 0
    assert stat.S_IMODE((tmp_path / "keys" / "k.json").stat().st_mode) == 0o600
