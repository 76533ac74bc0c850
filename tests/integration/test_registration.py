"""Content registration against the embedded database: the shipped packs and packs made on the fly."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from kombu import Queue

from st2common.content import ALL_KINDS, DEFAULT_KINDS, register
from st2common.exceptions import ValidationError
from st2common.models.db.action import ActionDB
from st2common.models.db.pack import PackDB
from st2common.models.db.runner import RunnerTypeDB
from st2common.runners import registry
from st2common.transport.connection import make_connection
from st2common.transport.publisher import Publisher
from st2common.transport.topology import Topology
from testsupport import make_settings

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "contrib" / "packs"
CORE_ACTIONS = {"local", "local_sudo", "remote", "remote_sudo", "noop", "echo", "error", "http", "pause",
                "uuid", "announcement", "inject_trigger", "ask", "sendmail"}

PACK_YAML = """\
name: {name}
description: A test pack.
version: 0.1.0
author: tester
email: tester@example.com
"""


@pytest.fixture
def settings(tmp_path, embedded_mongo):
    """Settings searching the shipped packs first, then this test's own pack folder."""
    (tmp_path / "packs").mkdir()
    return make_settings(tmp_path, embedded_mongo, extra={
        "ST2_CONTENT__SYSTEM_PACKS_BASE_PATH": str(SHIPPED),
        "ST2_CONTENT__PACKS_BASE_PATHS": str(tmp_path / "packs"),
    })


def only_paths(tmp_path, embedded_mongo, *paths: Path):
    """Settings whose pack search path is exactly paths (no shipped packs)."""
    return make_settings(tmp_path, embedded_mongo, extra={
        "ST2_CONTENT__SYSTEM_PACKS_BASE_PATH": str(paths[0]),
        "ST2_CONTENT__PACKS_BASE_PATHS": ":".join(str(p) for p in paths[1:]) or str(paths[0]),
    })


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def make_pack(base: Path, name: str, actions: dict[str, str]) -> Path:
    folder = base / name
    write(folder / "pack.yaml", PACK_YAML.format(name=name))
    for file_name, text in actions.items():
        write(folder / "actions" / file_name, text)
    return folder


def action_yaml(name: str, runner: str = "local-shell-cmd", extra: str = "") -> str:
    return f"name: {name}\nrunner_type: {runner}\ndescription: test action {name}\n{extra}"


def errors_of(report, pack: str) -> list:
    return [error for error in report.errors if error.pack == pack]


def test_shipped_packs_register_and_a_second_run_changes_nothing(settings, db):
    # Given the shipped packs; When they are registered with st2ctl reload's default kinds
    report = register(settings)

    # Then the core and default packs, every runner type and every core action are stored
    assert errors_of(report, "core") == [] and errors_of(report, "default") == []
    assert {p.ref for p in PackDB.objects(ref__in=["core", "default"])} == {"core", "default"}
    core = PackDB.objects.get(ref="core")
    assert core.version == "1.0.1" and core.path == str(SHIPPED / "core")
    assert "actions/send_mail/send_mail" in core.files and core.uid == "pack:core"
    assert {r.name for r in RunnerTypeDB.objects} == set(registry.RUNNERS)
    assert {a.name for a in ActionDB.objects(pack="core")} == CORE_ACTIONS
    echo = ActionDB.objects.get(ref="core.echo")
    assert echo.runner_type == {"name": "local-shell-cmd"}
    assert echo.metadata_file == "actions/echo.yaml" and echo.uid == "action:core:echo"
    assert echo.parameters["cmd"]["immutable"] is True
    assert ActionDB.objects.get(ref="core.sendmail").entry_point == "send_mail/send_mail"
    assert report.registered["runners"] == len(registry.RUNNERS)
    assert report.registered["actions"] >= len(CORE_ACTIONS)
    assert "Registered 11 runners" in report.summary()

    ids = {a.ref: a.pk for a in ActionDB.objects}
    count = (ActionDB.objects.count(), RunnerTypeDB.objects.count(), PackDB.objects.count())

    # When registered again
    again = register(settings)

    # Then nothing is written and nothing is duplicated
    assert again.registered == report.registered
    assert sum(again.changed.values()) == 0
    assert {a.ref: a.pk for a in ActionDB.objects} == ids
    assert (ActionDB.objects.count(), RunnerTypeDB.objects.count(), PackDB.objects.count()) == count


def test_runner_types_are_registered_with_their_parameters(settings, db):
    # When only runners are registered
    report = register(settings, ["runners"])

    # Then every runner type is stored with StackStorm's parameters, and no pack is touched
    assert set(report.registered) == {"runners"} and report.ok
    remote = RunnerTypeDB.objects.get(name="remote-shell-cmd")
    assert remote.runner_parameters["hosts"]["required"] is True
    assert remote.runner_parameters["dir"] == {
        "default": "/tmp", "immutable": True, "type": "string",
        "description": "The working directory where the script will be copied to on the remote host."}
    python = RunnerTypeDB.objects.get(name="python-script")
    assert python.runner_parameters["timeout"]["default"] == 600 and python.output_key == "result"
    assert RunnerTypeDB.objects.get(name="local-shell-cmd").runner_parameters["sudo_password"]["secret"] is True
    assert RunnerTypeDB.objects.get(name="http-request").output_key == "body"
    assert RunnerTypeDB.objects.get(name="inquirer").runner_parameters["ttl"]["default"] == 1440
    assert RunnerTypeDB.objects.get(name="noop").runner_parameters == {}
    assert RunnerTypeDB.objects.get(name="orquesta").output_schema["type"] == "object"
    assert PackDB.objects.count() == 0 and ActionDB.objects.count() == 0

    # And a runner an administrator disabled stays disabled after a reload
    RunnerTypeDB.objects(name="noop").update(set__enabled=False)
    register(settings, ["runners"])
    assert RunnerTypeDB.objects.get(name="noop").enabled is False


def test_registering_actions_registers_runners_first(tmp_path, embedded_mongo, db):
    # Given an empty database and a pack with one action
    packs = tmp_path / "only"
    make_pack(packs, "solo", {"hello.yaml": action_yaml("hello", extra="parameters:\n  cmd:\n    default: echo hi\n")})
    settings = only_paths(tmp_path, embedded_mongo, packs)

    # When only actions are asked for
    report = register(settings, ["actions"])

    # Then runners were registered too, before the action that needs one
    assert list(report.registered) == ["runners", "packs", "actions"]
    assert report.ok, report.errors
    action = ActionDB.objects.get(ref="solo.hello")
    assert action.parameters == {"cmd": {"default": "echo hi"}}


def test_a_broken_action_is_reported_with_path_and_field_and_the_rest_registers(settings, db, tmp_path):
    # Given a pack with a good action, one with an unknown field, one with a list type and bad YAML
    pack = make_pack(tmp_path / "packs", "mixed", {
        "good.yaml": action_yaml("good"),
        "unknown_field.yaml": action_yaml("unknown_field", extra="colour: blue\n"),
        "bad_type.yaml": action_yaml("bad_type", extra=textwrap.dedent("""\
            parameters:
              count:
                type: [string, integer]
            """)),
        "broken.yaml": "name: broken\nrunner_type: [noop\n",
        "no_runner.yaml": action_yaml("no_runner", runner="winrm-cmd"),
    })

    # When registered
    report = register(settings, ["actions"])

    # Then each broken file is reported by path, field and line, and the good one is stored
    errors = {Path(e.path).name: e for e in errors_of(report, "mixed")}
    assert set(errors) == {"unknown_field.yaml", "bad_type.yaml", "broken.yaml", "no_runner.yaml"}
    assert errors["unknown_field.yaml"].field == "colour" and errors["unknown_field.yaml"].line == 4
    assert errors["unknown_field.yaml"].path == str(pack / "actions" / "unknown_field.yaml")
    assert errors["bad_type.yaml"].field == "parameters.count.type" and errors["bad_type.yaml"].line == 6
    assert errors["broken.yaml"].line is not None
    assert errors["no_runner.yaml"].field == "runner_type" and "winrm-cmd" in str(errors["no_runner.yaml"])
    assert "unknown_field.yaml:4: colour" in str(errors["unknown_field.yaml"])
    assert ActionDB.objects.get(ref="mixed.good").enabled is True
    assert ActionDB.objects(pack="mixed").count() == 1
    assert {a.name for a in ActionDB.objects(pack="core")} == CORE_ACTIONS
    assert report.failed["actions"] >= 4 and not report.ok
    assert "failed" in report.summary()


def test_an_action_may_not_change_a_runner_parameter_type(settings, db, tmp_path):
    # Given an action re-typing the runner's timeout and one re-declaring remote's immutable dir
    make_pack(tmp_path / "packs", "overrides", {
        "retype.yaml": action_yaml("retype", extra="parameters:\n  timeout:\n    type: string\n"),
        "redir.yaml": action_yaml("redir", runner="remote-shell-cmd",
                                  extra="parameters:\n  dir:\n    default: /srv\n    immutable: true\n"),
        "fine.yaml": action_yaml("fine", extra="parameters:\n  timeout:\n    default: 5\n    immutable: true\n"),
    })

    # When registered
    report = register(settings, ["actions"])

    # Then the refused overrides are reported on the parameter, and the allowed one is stored
    errors = {Path(e.path).name: e for e in errors_of(report, "overrides")}
    assert errors["retype.yaml"].field == "parameters.timeout.type"
    assert errors["redir.yaml"].field == "parameters.dir.immutable"
    assert set(errors) == {"retype.yaml", "redir.yaml"}
    assert ActionDB.objects.get(ref="overrides.fine").parameters["timeout"] == {"default": 5, "immutable": True}


def test_a_pack_field_that_names_another_pack_is_rejected(settings, db, tmp_path):
    # Given an action claiming to belong to another pack
    make_pack(tmp_path / "packs", "mine", {
        "stray.yaml": action_yaml("stray", extra="pack: theirs\n"),
        "explicit.yaml": action_yaml("explicit", extra="pack: mine\n"),
    })

    report = register(settings, ["actions"])

    [error] = errors_of(report, "mine")
    assert error.field == "pack" and error.line == 4 and "theirs" in str(error)
    assert not ActionDB.objects(ref__in=["theirs.stray", "mine.stray"])
    assert ActionDB.objects.get(ref="mine.explicit").pack == "mine"


def test_the_first_search_path_wins_for_a_duplicate_pack(tmp_path, embedded_mongo, db):
    # Given the same pack in the system path and in a user path, with different actions
    system, user = tmp_path / "system", tmp_path / "user"
    make_pack(system, "twin", {"first.yaml": action_yaml("first")})
    make_pack(user, "twin", {"second.yaml": action_yaml("second")})
    settings = only_paths(tmp_path, embedded_mongo, system, user)

    # When registered
    report = register(settings, ["actions"])

    # Then content and pack record both come from the first path, and the shadowed copy is reported
    assert report.ok, report.errors
    assert [a.ref for a in ActionDB.objects(pack="twin")] == ["twin.first"]
    assert PackDB.objects.get(ref="twin").path == str(system / "twin")
    assert any("shadowed" in warning and str(user / "twin") in warning for warning in report.warnings)


def test_only_top_level_action_files_are_read_and_config_yaml_is_skipped(settings, db, tmp_path):
    # Given an actions folder with a workflow definition below it and a config.yaml beside it
    pack = make_pack(tmp_path / "packs", "layout", {"top.yaml": action_yaml("top"), "config.yaml": "a: 1\n"})
    write(pack / "actions" / "workflows" / "deep.yaml", action_yaml("deep"))

    report = register(settings, ["actions"])

    assert errors_of(report, "layout") == []
    assert [a.name for a in ActionDB.objects(pack="layout")] == ["top"]


def test_a_broken_pack_yaml_is_reported_and_other_packs_still_register(settings, db, tmp_path):
    # Given a pack without an author and a pack whose version is a YAML number
    broken = tmp_path / "packs" / "noauthor"
    write(broken / "pack.yaml", "name: noauthor\ndescription: x\nversion: 1.0.0\n")
    write(broken / "actions" / "a.yaml", action_yaml("a"))
    loose = tmp_path / "packs" / "loose"
    write(loose / "pack.yaml", "name: loose\ndescription: x\nversion: 0.2\nauthor: me\n")

    report = register(settings, ["actions"])

    [error] = errors_of(report, "noauthor")
    assert error.field == "author" and error.path == str(broken / "pack.yaml")
    assert not PackDB.objects(ref="noauthor") and not ActionDB.objects(pack="noauthor")
    assert PackDB.objects.get(ref="loose").version == "0.2.0"
    assert ActionDB.objects(pack="core").count() == len(CORE_ACTIONS)


def test_changes_on_disk_update_the_record_in_place(tmp_path, embedded_mongo, db):
    # Given a registered action
    packs = tmp_path / "p"
    pack = make_pack(packs, "evolving", {"act.yaml": action_yaml("act")})
    settings = only_paths(tmp_path, embedded_mongo, packs)
    register(settings, ["actions"])
    before = ActionDB.objects.get(ref="evolving.act")

    # When its description changes on disk and content is reloaded
    write(pack / "actions" / "act.yaml", action_yaml("act").replace("test action act", "changed"))
    report = register(settings, ["actions"])

    # Then the same record is updated and only it counts as changed
    after = ActionDB.objects.get(ref="evolving.act")
    assert after.pk == before.pk and after.description == "changed"
    assert report.changed["actions"] == 1 and report.changed["runners"] == 0


def test_writes_publish_events_and_a_repeat_publishes_none(tmp_path, embedded_mongo, db):
    # Given a publisher on the filesystem bus and a queue listening to action events
    packs = tmp_path / "p"
    make_pack(packs, "evented", {"one.yaml": action_yaml("one"), "two.yaml": action_yaml("two")})
    settings = only_paths(tmp_path, embedded_mongo, packs)
    connection = make_connection(settings.messaging)
    topology = Topology(settings.messaging.prefix)
    publisher = Publisher(connection, topology)
    queue = Queue(f"{settings.messaging.prefix}.test.actions", topology.exchange("action"), routing_key="#")
    bound = queue(connection.default_channel)
    bound.declare()

    def drain() -> list[str]:
        keys = []
        while (message := bound.get(no_ack=True)) is not None:
            keys.append(message.delivery_info["routing_key"])
        return keys

    try:
        # When registered twice
        register(settings, ["actions"], publisher=publisher)
        first = drain()
        register(settings, ["actions"], publisher=publisher)
        second = drain()
    finally:
        connection.release()

    # Then the first run announced two created actions and the second nothing
    assert first == ["create", "create"]
    assert second == []


def test_unknown_kinds_are_refused_with_the_valid_ones():
    with pytest.raises(ValidationError) as info:
        register(None, ["actions", "gadgets"])
    assert info.value.field == "kinds" and "runners" in str(info.value)
    assert set(DEFAULT_KINDS) <= set(ALL_KINDS) and "runners" in DEFAULT_KINDS
