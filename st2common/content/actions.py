"""Action registration: ``actions/*.yaml`` of every pack, validated (ActionAPI) and upserted by ref.

StackStorm's rules: only the top level of ``actions/`` is read and
``actions/config.yaml`` is skipped; a ``pack:`` field must name the pack the
file lies in; ``runner_type`` must be a registered runner type; action
parameters may override only some attributes of the runner's parameters
(st2common.runners.registry). ``metadata_file`` is stored relative to the pack.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from st2common.content import schemas
from st2common.content.loader import PackDir, YamlDocument
from st2common.exceptions import ContentError, ParameterError, UnknownRunnerError
from st2common.models.db.action import ActionDB
from st2common.models.db.runner import RunnerTypeDB
from st2common.runners import registry

if TYPE_CHECKING:
    from st2common.content.bootstrap import Registration

LOG = logging.getLogger(__name__)

KIND = "actions"
FOLDER = "actions"
SKIPPED_FILES = ("config.yaml",)


@dataclass(frozen=True)
class ActionSpec:
    """The validated metadata of one action."""

    name: str
    pack: str
    runner_type: str
    description: str
    enabled: bool
    entry_point: str
    parameters: dict[str, dict[str, Any]]
    output_schema: dict[str, Any]
    notify: dict[str, Any]
    tags: tuple[dict[str, Any], ...]
    metadata_file: str

    @property
    def ref(self) -> str:
        return ActionDB.make_ref(self.pack, self.name)


class RunnerTypes:
    """Registered runner types, read once per run."""

    def __init__(self, run: "Registration") -> None:
        self.run = run
        self._cache: dict[str, RunnerTypeDB | None] = {}

    def get(self, name: str) -> RunnerTypeDB | None:
        """The registered runner type for name (or alias), or None."""
        try:
            name = registry.canonical_name(name)
        except UnknownRunnerError:
            return None
        if name not in self._cache:
            self._cache[name] = self.run.access(RunnerTypeDB).get(name=name)
        return self._cache[name]


def _error(message: str, document: YamlDocument, pack: PackDir, where: list[Any]) -> ContentError:
    return ContentError(message, pack=pack.ref, path=str(document.path), line=document.line_of(where),
                        field=schemas.field_name(where))


def parse_action(document: YamlDocument, pack: PackDir, runners: RunnerTypes) -> ActionSpec:
    """Validate one action metadata file of pack against the schema and its runner type."""
    data = document.data
    schemas.validate(schemas.ACTION_SCHEMA, data, path=str(document.path), pack=pack.ref,
                     line_of=document.line_of)
    pack_field = data.get("pack") or pack.ref
    if pack_field != pack.ref:
        raise _error(f'the action is in pack "{pack.ref}" but its "pack" field is "{pack_field}"',
                     document, pack, ["pack"])
    runner = runners.get(data["runner_type"])
    if runner is None:
        raise _error(f'runner type "{data["runner_type"]}" is not registered; valid runner types are: '
                     f'{", ".join(sorted(registry.RUNNERS))}', document, pack, ["runner_type"])
    parameters = {name: dict(attrs or {}) for name, attrs in (data.get("parameters") or {}).items()}
    ref = ActionDB.make_ref(pack.ref, data["name"])
    try:
        registry.check_parameter_overrides(runner.runner_parameters or {}, parameters, ref)
    except ParameterError as exc:
        where = (exc.field or "parameters").split(".")
        raise _error(exc.message, document, pack, where) from None
    return ActionSpec(
        name=data["name"],
        pack=pack.ref,
        runner_type=runner.name,
        description=data.get("description", ""),
        enabled=data.get("enabled", True),
        entry_point=data.get("entry_point") or "",
        parameters=parameters,
        output_schema=schemas.normalize_output_schema(data.get("output_schema")),
        notify=dict(data.get("notify") or {}),
        tags=tuple(dict(tag) for tag in data.get("tags") or ()),
        metadata_file=pack.relative(document.path),
    )


def action_files(pack: PackDir) -> list[Path]:
    """The action metadata files of a pack, in name order."""
    return [path for path in pack.metadata_files(FOLDER) if path.name not in SKIPPED_FILES]


def register_action(run: "Registration", spec: ActionSpec) -> bool:
    """Upsert one action; True when it was written."""
    fields = {
        "name": spec.name,
        "pack": spec.pack,
        "description": spec.description,
        "enabled": spec.enabled,
        "entry_point": spec.entry_point,
        "runner_type": {"name": spec.runner_type},
        "parameters": spec.parameters,
        "output_schema": spec.output_schema,
        "notify": spec.notify,
        "tags": list(spec.tags),
        "metadata_file": spec.metadata_file,
    }
    _, changed = run.upsert(ActionDB, {"ref": spec.ref}, fields)
    return changed


def register_pack_actions(run: "Registration", pack: PackDir, runners: RunnerTypes) -> None:
    """Register every action of one pack, reporting the files that cannot be."""
    seen: dict[str, str] = {}

    def register(document: YamlDocument) -> tuple[bool, str]:
        spec = parse_action(document, pack, runners)
        if spec.ref in seen:
            raise _error(f'action "{spec.ref}" is already defined in {seen[spec.ref]}', document, pack, ["name"])
        seen[spec.ref] = spec.metadata_file
        return register_action(run, spec), spec.ref

    for path in action_files(pack):
        run.register_file(KIND, pack, path, register)


def register_actions(run: "Registration") -> None:
    """Register the actions of every pack on the search path (StackStorm's --register-actions)."""
    runners = RunnerTypes(run)
    packs = run.packs().all()
    run.report.start(KIND)
    for pack in packs:
        register_pack_actions(run, pack, runners)
