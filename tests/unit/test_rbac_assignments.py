"""Role assignment files: StackStorm's rbac/assignments layout, bad files skipped, unknown roles ignored."""

from __future__ import annotations

import types

from st2common.rbac import Roles, load_assignments


def settings_for(folder, enable=True, admins=()):
    return types.SimpleNamespace(rbac=types.SimpleNamespace(enable=enable, assignments_path=folder),
                                 system=types.SimpleNamespace(admin_users=admins),
                                 system_user=types.SimpleNamespace(user="stanley"))


def test_assignments_give_roles_and_bad_files_are_skipped(tmp_path, caplog):
    (tmp_path / "alice.yaml").write_text("---\nusername: alice\nroles:\n  - observer\n  - wizard\n")
    (tmp_path / "bob.yaml").write_text("username: bob\nroles: [admin]\ndescription: ops\n")
    (tmp_path / "broken.yaml").write_text("username: [\n")
    (tmp_path / "norole.yaml").write_text("roles: [admin]\n")
    found = load_assignments(tmp_path)
    assert set(found) == {"alice", "bob"}
    assert found["alice"].roles == ("observer",) and found["bob"].description == "ops"
    assert "wizard" in caplog.text and "broken.yaml" in caplog.text and "norole.yaml" in caplog.text


def test_roles_decide_admin_and_read_rights(tmp_path):
    (tmp_path / "alice.yaml").write_text("username: alice\nroles: [observer]\n")
    roles = Roles(settings_for(tmp_path, admins=("root",)))
    assert roles.may_read("alice") and not roles.is_admin("alice")
    assert not roles.may_read("carol") and not roles.is_admin("carol")
    assert roles.is_admin("root") and roles.of("root") == ["system_admin"]
    assert roles.is_admin("stanley")
    # A new assignment file is seen without a restart
    (tmp_path / "carol.yaml").write_text("username: carol\nroles: [admin]\n")
    assert roles.is_admin("carol")


def test_with_rbac_off_everyone_is_an_admin(tmp_path):
    roles = Roles(settings_for(tmp_path, enable=False))
    assert roles.is_admin("anyone") and roles.may_read("anyone")
