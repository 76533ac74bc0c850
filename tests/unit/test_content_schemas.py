"""Pack content schemas, YAML line numbers, and how runner and action parameters merge."""

from __future__ import annotations

import importlib.util
import textwrap
import uuid
from pathlib import Path

import jsonschema
import pytest

from st2common.content import schemas
from st2common.content.loader import load_mapping, load_yaml, pack_ref
from st2common.content.packs import normalize_version
from st2common.content.runners import load_runners
from st2common.exceptions import ContentError, ParameterError, UnknownRunnerError
from st2common.runners import registry

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "contrib" / "packs" / "core"


def yaml_file(tmp_path: Path, text: str, name: str = "meta.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def check_action(tmp_path: Path, text: str) -> ContentError | None:
    document = load_mapping(yaml_file(tmp_path, text))
    try:
        schemas.validate(schemas.ACTION_SCHEMA, document.data, path=str(document.path), line_of=document.line_of)
    except ContentError as exc:
        return exc
    return None


@pytest.fixture(scope="module")
def runner_parameters() -> dict[str, dict]:
    specs, errors = load_runners()
    assert errors == []
    return {spec.name: spec.runner_parameters for spec in specs}


# -- shipped metadata ------------------------------------------------------------------


def test_every_runner_type_has_metadata_and_a_class_path(runner_parameters):
    assert set(runner_parameters) == set(registry.RUNNERS)
    for path in registry.RUNNERS.values():
        module, _, cls = path.partition(":")
        assert module and cls


@pytest.mark.parametrize("runner, parameter, attributes", [
    ("local-shell-cmd", "timeout", {"default": 60, "type": "integer"}),
    ("local-shell-cmd", "kwarg_op", {"default": "--"}),
    ("local-shell-cmd", "sudo_password", {"default": None, "secret": True}),
    ("local-shell-script", "content_version", {"type": "string"}),
    ("remote-shell-cmd", "dir", {"default": "/tmp", "immutable": True}),
    ("remote-shell-cmd", "parallel", {"default": False, "immutable": True}),
    ("remote-shell-cmd", "hosts", {"required": True}),
    ("remote-shell-script", "dir", {"default": "/tmp"}),
    ("python-script", "timeout", {"default": 600}),
    ("python-script", "log_level", {"default": "DEBUG"}),
    ("http-request", "url", {"required": True}),
    ("http-request", "verify_ssl_cert", {"default": True}),
    ("http-request", "allow_redirects", {"default": False}),
    ("inquirer", "ttl", {"default": 1440}),
    ("inquirer", "route", {"default": ""}),
    ("announcement", "route", {"default": "general", "maxLength": 255}),
    ("announcement", "experimental", {"required": True}),
    ("orquesta", "notify", {"default": [], "type": "array"}),
    ("action-chain", "display_published", {"default": True}),
    ("action-chain", "skip_notify", {"default": []}),
])
def test_runner_parameters_follow_stackstorm(runner_parameters, runner, parameter, attributes):
    definition = runner_parameters[runner][parameter]
    assert {key: definition.get(key, "<missing>") for key in attributes} == attributes


def test_remote_script_dir_is_not_immutable(runner_parameters):
    assert "immutable" not in runner_parameters["remote-shell-script"]["dir"]


@pytest.mark.parametrize("path", sorted((CORE / "actions").glob("*.yaml")), ids=lambda p: p.name)
def test_core_actions_validate_and_merge_with_their_runner(path, runner_parameters):
    document = load_mapping(path)
    schemas.validate(schemas.ACTION_SCHEMA, document.data, path=str(path), line_of=document.line_of)
    runner = registry.canonical_name(document.data["runner_type"])
    merged = registry.merge_parameters(runner_parameters[runner], document.data.get("parameters"),
                                       f"core.{document.data['name']}")
    assert set(runner_parameters[runner]) <= set(merged)


def test_core_pack_manifest_is_valid():
    document = load_mapping(CORE / "pack.yaml")
    schemas.validate(schemas.PACK_SCHEMA, document.data)
    assert document.data["version"] == "1.0.1" and pack_ref(document.data, "core") == "core"


# -- YAML ------------------------------------------------------------------------------


def test_yaml_keeps_the_line_of_every_key(tmp_path):
    document = load_yaml(yaml_file(tmp_path, """\
        ---
        name: x
        parameters:
          cmd:
            type: string
          list:
            - a
            - b
        """))
    assert document.line_of(["name"]) == 2
    assert document.line_of(["parameters", "cmd", "type"]) == 5
    assert document.line_of(["parameters", "list", 1]) == 8
    assert document.line_of(["parameters", "cmd", "missing"]) == 4
    assert document.line_of([]) is None


def test_a_yaml_syntax_error_names_file_and_line(tmp_path):
    path = yaml_file(tmp_path, "name: x\nparameters:\n  cmd: [a, b\n  other: 1\n")
    with pytest.raises(ContentError) as info:
        load_yaml(path)
    assert info.value.path == str(path) and info.value.line in (3, 4)
    assert str(info.value).startswith(f"{path}:")


@pytest.mark.parametrize("text, kind", [("", "empty"), ("- a\n- b\n", "a list")])
def test_metadata_must_be_a_mapping(tmp_path, text, kind):
    with pytest.raises(ContentError) as info:
        load_mapping(yaml_file(tmp_path, text))
    assert kind in str(info.value)


# -- action metadata -------------------------------------------------------------------


def test_a_valid_action_passes(tmp_path):
    assert check_action(tmp_path, """\
        name: run
        runner_type: local-shell-cmd
        pack: demo
        enabled: false
        description: runs
        parameters:
          count:
            type: integer
            default: 3
            minimum: 1
            position: 0
          token:
            type: string
            secret: true
            required: true
          opts:
            type: object
            properties:
              flag:
                type: boolean
                required: true
        output_schema:
          type: object
        notify:
          on-complete:
            message: done
            routes: [slack]
        tags:
          - name: team
            value: ops
        """) is None


@pytest.mark.parametrize("text, field, line", [
    ("name: a\nrunner_type: noop\ncolour: blue\n", "colour", 3),
    ("name: a\ndescription: no runner\n", "runner_type", None),
    ("name: a\nrunner_type: noop\nenabled: 'yes'\n", "enabled", 3),
    ("name: a\nrunner_type: noop\nparameters:\n  x:\n    type: [string, 'null']\n", "parameters.x.type", 5),
    ("name: a\nrunner_type: noop\nparameters:\n  x:\n    type: strng\n", "parameters.x.type", 5),
    ("name: a\nrunner_type: noop\nparameters:\n  x:\n    required: 'yes'\n", "parameters.x.required", 5),
    ("name: a\nrunner_type: noop\nparameters:\n  x:\n    position: -1\n", "parameters.x.position", 5),
    ("name: a\nrunner_type: noop\nparameters:\n  x:\n    secrets: true\n", "parameters.x.secrets", 5),
    ("name: a\nrunner_type: noop\nparameters:\n  bad-name:\n    type: string\n", "parameters.bad-name", 4),
    ("name: a\nrunner_type: noop\nparameters:\n  x:\n    type: object\n    properties:\n      y:\n"
     "        type: [string]\n", "parameters.x.properties.y.type", 8),
    ("name: a\nrunner_type: noop\nnotify:\n  on-done: {}\n", "notify.on-done", 4),
])
def test_an_invalid_action_names_field_and_line(tmp_path, text, field, line):
    error = check_action(tmp_path, text)
    assert error is not None
    assert error.field == field
    assert error.line == line
    assert field in str(error)


def test_the_parameter_meta_schema_is_a_valid_draft4_schema():
    jsonschema.Draft4Validator.check_schema(schemas.PARAMETER_SCHEMA)
    validator = jsonschema.Draft4Validator(schemas.PARAMETER_SCHEMA)
    assert validator.is_valid({"type": "string", "immutable": True, "default": "x", "enum": ["x", "y"]})
    assert not validator.is_valid({"type": "string", "enum": []})
    assert not validator.is_valid({"type": "date"})


def test_legacy_output_schema_is_wrapped():
    legacy = {"stdout": {"type": "string"}}
    assert schemas.normalize_output_schema(legacy) == {
        "type": "object", "properties": legacy, "additionalProperties": True}
    full = {"type": "object", "properties": legacy}
    assert schemas.normalize_output_schema(full) == full
    assert schemas.normalize_output_schema(None) == {}


# -- pack.yaml -------------------------------------------------------------------------


@pytest.mark.parametrize("data, field", [
    ({"name": "p", "description": "d", "version": "1.0.0"}, "author"),
    ({"name": "p", "description": "d", "version": "one", "author": "a"}, "version"),
    ({"name": "p", "ref": "Bad-Ref", "description": "d", "version": "1.0.0", "author": "a"}, "ref"),
    ({"name": "p", "description": "d", "version": "1.0.0", "author": "a", "email": "nope"}, "email"),
    ({"name": "p", "description": "d", "version": "1.0.0", "author": "a", "python_versions": ["4"]},
     "python_versions.0"),
    ({"name": "p", "description": "d", "version": "1.0.0", "author": "a", "contributors": ["x" * 101]},
     "contributors.0"),
])
def test_an_invalid_pack_manifest_names_the_field(data, field):
    with pytest.raises(ContentError) as info:
        schemas.validate(schemas.PACK_SCHEMA, data, path="pack.yaml")
    assert info.value.field == field


def test_pack_manifest_allows_extra_fields_and_normalises_versions():
    schemas.validate(schemas.PACK_SCHEMA, {"name": "p", "description": "d", "version": "1.2.3-rc.1",
                                           "author": "a", "homepage": "https://example.com"})
    assert normalize_version(0.2) == "0.2.0"
    assert normalize_version("1.0") == "1.0.0"
    assert normalize_version(1) == "1"
    assert normalize_version("1.2.3") == "1.2.3"


@pytest.mark.parametrize("metadata, folder, ref", [
    ({"name": "Any Name", "ref": "given"}, "folder", "given"),
    ({"name": "Any Name"}, "folder_ok", "folder_ok"),
    ({"name": "name_ok"}, "Bad-Folder", "name_ok"),
    ({"name": "Bad Name"}, "Bad-Folder", None),
])
def test_pack_ref_resolution(metadata, folder, ref):
    assert pack_ref(metadata, folder) == ref


# -- runner registry and parameter merging ------------------------------------------------


def test_unknown_runner_lists_the_valid_ones():
    with pytest.raises(UnknownRunnerError) as info:
        registry.resolve("winrm-cmd")
    assert "local-shell-cmd" in str(info.value) and "orquesta" in info.value.valid
    assert registry.canonical_name("orchestra") == "orquesta"


RUNNER = {
    "cmd": {"type": "string", "description": "command"},
    "sudo": {"type": "boolean", "default": False},
    "dir": {"type": "string", "default": "/tmp", "immutable": True},
    "kwarg_op": {"type": "string", "default": "--"},
    "sudo_password": {"type": "string", "default": None, "secret": True},
}


def test_an_action_overrides_allowed_attributes_and_adds_its_own():
    merged = registry.merge_parameters(RUNNER, {
        "cmd": {"type": "string", "default": "echo {{message}}", "immutable": True, "required": True},
        "sudo_password": {"immutable": True},
        "message": {"type": "string", "required": True, "position": 0},
    })
    assert merged["cmd"] == {"type": "string", "description": "command", "default": "echo {{message}}",
                             "immutable": True, "required": True}
    assert merged["sudo"] == RUNNER["sudo"] and merged["message"]["position"] == 0
    assert registry.immutable_parameters(merged) == ["cmd", "dir", "sudo_password"]
    assert registry.secret_parameters(merged) == ["sudo_password"]
    assert RUNNER["cmd"] == {"type": "string", "description": "command"}


def test_an_object_default_replaces_the_runner_default_whole():
    runner = {"schema": {"type": "object", "default": {"a": 1, "b": 2}}}
    merged = registry.merge_parameters(runner, {"schema": {"default": {"c": 3}}})
    assert merged["schema"]["default"] == {"c": 3}


@pytest.mark.parametrize("action, field", [
    ({"cmd": {"type": "integer"}}, "parameters.cmd.type"),
    ({"cmd": {"secret": True}}, "parameters.cmd.secret"),
    ({"dir": {"immutable": False}}, "parameters.dir.immutable"),
    ({"cmd": {"immutable": True}}, "parameters.cmd.default"),
    ({"new": {"type": "string", "immutable": True}}, "parameters.new.default"),
    ({"a": {"position": 0}, "b": {"position": 0}}, "parameters.b.position"),
    ({"a": {"position": 0}, "b": {"position": 2}}, "parameters"),
    ({"a": {"position": 1}}, "parameters"),
])
def test_refused_overrides_name_the_parameter(action, field):
    with pytest.raises(ParameterError) as info:
        registry.merge_parameters(RUNNER, action, "demo.act")
    assert info.value.field == field


def test_an_identical_value_for_a_fixed_attribute_is_accepted():
    merged = registry.merge_parameters(RUNNER, {"cmd": {"type": "string", "description": "mine"}})
    assert merged["cmd"]["description"] == "mine"


def test_parameters_schema_validates_requests_with_draft3_required_converted():
    parameters = registry.merge_parameters(RUNNER, {
        "message": {"type": "string", "required": True},
        "opts": {"type": "object", "properties": {"flag": {"type": "boolean", "required": True}}},
    })
    schema = registry.parameters_schema(parameters)
    jsonschema.Draft4Validator.check_schema(schema)
    validator = jsonschema.Draft4Validator(schema)
    assert schema["required"] == ["message"]
    assert validator.is_valid({"message": "hi", "opts": {"flag": True}})
    assert not validator.is_valid({"opts": {"flag": True}})
    assert not validator.is_valid({"message": "hi", "opts": {}})
    assert not validator.is_valid({"message": "hi", "unknown": 1})
    assert "secret" not in schema["properties"]["sudo_password"]


# -- core pack python actions ----------------------------------------------------------------


def load_action_class(file_name: str, class_name: str):
    spec = importlib.util.spec_from_file_location(f"core_{file_name[:-3]}", CORE / "actions" / file_name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, class_name)


def test_core_uuid_and_pause_actions_run():
    generate = load_action_class("generate_uuid.py", "GenerateUUID")(config={})
    assert uuid.UUID(generate.run(uuid_type="uuid4")).version == 4
    assert uuid.UUID(generate.run(uuid_type="uuid1")).version == 1
    pause = load_action_class("pause.py", "PauseAction")(config={})
    assert pause.run(max_pause=0, random=True) is None

