"""Runner type registration: the runner types of st2common/runners/runners.yaml into the database.

Runner types do not come from packs (StackStorm reads them from its runner
packages); each must also be known to the runner registry, which names the
class that runs it. A runner type an administrator disabled stays disabled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mongoengine as me

from st2common.content import schemas
from st2common.content.loader import YamlDocument, load_yaml
from st2common.exceptions import ContentError
from st2common.models.db.runner import RunnerTypeDB
from st2common.runners import registry

if TYPE_CHECKING:
    from st2common.content.bootstrap import Registration

LOG = logging.getLogger(__name__)

KIND = "runners"


@dataclass(frozen=True)
class RunnerSpec:
    """The validated metadata of one runner type."""

    name: str
    description: str
    enabled: bool
    runner_package: str | None
    runner_module: str | None
    runner_parameters: dict[str, dict[str, Any]]
    output_key: str | None
    output_schema: dict[str, Any]


def parse_runner(data: Any, document: YamlDocument, index: int) -> RunnerSpec:
    """Validate one runner type entry of the metadata file."""
    path = str(document.path)
    if not isinstance(data, dict):
        raise ContentError("a runner type must be a mapping of fields", path=path,
                           line=document.line_of([index]), field=str(index))
    schemas.validate(schemas.RUNNER_SCHEMA, data, path=path, line_of=document.line_of, prefix=(index,))
    name = data["name"]
    if name not in registry.RUNNERS:
        raise ContentError(f'runner type "{name}" has no class in the runner registry', path=path,
                           line=document.line_of([index, "name"]), field=f"{index}.name")
    return RunnerSpec(
        name=name,
        description=data.get("description", ""),
        enabled=data.get("enabled", True),
        runner_package=data.get("runner_package"),
        runner_module=data.get("runner_module"),
        runner_parameters={k: dict(v or {}) for k, v in (data.get("runner_parameters") or {}).items()},
        output_key=data.get("output_key"),
        output_schema=schemas.normalize_output_schema(data.get("output_schema")),
    )


def load_runners(path: Path = registry.METADATA_FILE) -> tuple[list[RunnerSpec], list[ContentError]]:
    """Every runner type of a metadata file, and the entries that failed validation."""
    document = load_yaml(path)
    if not isinstance(document.data, list):
        raise ContentError("the runner metadata file must hold a list of runner types", path=str(path), line=1)
    specs, errors = [], []
    for index, data in enumerate(document.data):
        try:
            specs.append(parse_runner(data, document, index))
        except ContentError as exc:
            errors.append(exc)
    return specs, errors


def register_runner(run: "Registration", spec: RunnerSpec) -> bool:
    """Upsert one runner type; True when it was written."""
    fields = {
        "description": spec.description,
        "enabled": spec.enabled,
        "runner_package": spec.runner_package,
        "runner_module": spec.runner_module,
        "runner_parameters": spec.runner_parameters,
        "output_key": spec.output_key,
        "output_schema": spec.output_schema,
    }
    existing = run.access(RunnerTypeDB).get(name=spec.name)
    if existing is not None and not existing.enabled:
        # Disabling a runner is an administrator's decision that a reload must not undo.
        fields["enabled"] = False
    _, changed = run.upsert(RunnerTypeDB, {"name": spec.name}, fields)
    return changed


def register_runners(run: "Registration") -> None:
    """Register every runner type (StackStorm's --register-runners)."""
    report = run.report
    report.start(KIND)
    try:
        specs, errors = load_runners()
    except ContentError as exc:
        report.fail(KIND, exc)
        return
    for error in errors:
        report.fail(KIND, error)
    for spec in specs:
        try:
            changed = register_runner(run, spec)
        except me.ValidationError as exc:
            report.fail(KIND, ContentError(f'runner type "{spec.name}" cannot be stored: {exc}',
                                           path=str(registry.METADATA_FILE), field="name"))
            continue
        report.count(KIND, changed)
        LOG.debug("runner type %s registered (changed: %s)", spec.name, changed)
