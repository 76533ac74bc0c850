"""The htpasswd flat file: bcrypt lines accepted (htpasswd -B's $2y$ too), weak schemes refused."""

from __future__ import annotations

import stat

import bcrypt

from st2common.services.users import FlatFileUsers, add_user, read_htpasswd


def test_users_added_are_checked_by_bcrypt_and_the_file_is_private(tmp_path):
    path = tmp_path / "auth" / "htpasswd"
    add_user(path, "alice", "s3cret", rounds=4)
    add_user(path, "bob", "other", rounds=4)
    add_user(path, "alice", "changed", rounds=4)
    users = FlatFileUsers(path)
    assert users.authenticate("alice", "changed") and not users.authenticate("alice", "s3cret")
    assert users.authenticate("bob", "other") and not users.authenticate("carol", "other")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "changed" not in path.read_text()


def test_apache_bcrypt_lines_are_accepted_and_weak_schemes_skipped(tmp_path, caplog):
    apache = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$", 1)
    path = tmp_path / "htpasswd"
    path.write_text(f"# comment\n\nalice:{apache}\nmd5:$apr1$abc$xyz\nsha:{{SHA}}qUqP5cyxm6YcTAhz05Hph5gvu9M=\n")
    assert set(read_htpasswd(path)) == {"alice"}
    assert "md5" in caplog.text and "not bcrypt" in caplog.text
    assert FlatFileUsers(path).authenticate("alice", "pw")


def test_the_file_is_re_read_when_it_changes(tmp_path):
    path = tmp_path / "htpasswd"
    add_user(path, "alice", "one", rounds=4)
    users = FlatFileUsers(path)
    assert users.authenticate("alice", "one")
    add_user(path, "dave", "two", rounds=4)
    assert users.authenticate("dave", "two")
