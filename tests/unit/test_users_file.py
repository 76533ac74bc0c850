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


def test_st2api_creates_the_admin_when_no_users_file_exists_and_never_logs_the_password(tmp_path, caplog):
    # Given a deployment started without st2ctl (compose), with no users file yet
    import logging

    from st2api.cmd import _ensure_admin
    from st2common.services import users
    from testsupport import make_settings

    settings = make_settings(tmp_path, None)
    caplog.set_level(logging.INFO)
    # When st2api starts
    _ensure_admin(settings)
    # Then st2admin exists with a generated password kept 0600, its place logged, not its value
    password = users.admin_password_path(settings).read_text().strip()
    assert FlatFileUsers(settings.auth.flat_file_path).authenticate("st2admin", password)
    assert stat.S_IMODE(users.admin_password_path(settings).stat().st_mode) == 0o600
    assert "st2admin.password" in caplog.text and password not in caplog.text
    assert (tmp_path / "var" / "rbac" / "assignments" / "st2admin.yaml").read_text().count("system_admin") == 1
    # And a second start changes nothing
    _ensure_admin(settings)
    assert users.admin_password_path(settings).read_text().strip() == password
