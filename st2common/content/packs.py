"""Pack registration: validate ``pack.yaml`` (StackStorm's PackAPI) and upsert the pack record.

Every content registrar asks the run's PackCatalog for the packs; the
catalog discovers them once and registers each pack record once per run, as
StackStorm's per-run pack cache does. A pack whose manifest is broken is
reported and its content is not registered at all.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from st2common.content import schemas
from st2common.content.loader import PackDir, discover
from st2common.exceptions import ContentError
from st2common.models.db.pack import PackDB

if TYPE_CHECKING:
    from st2common.content.bootstrap import Registration

LOG = logging.getLogger(__name__)

KIND = "packs"

# Files under these folders, or with these suffixes, are not listed in a pack's files.
_SKIPPED_DIRS = (".git", "__pycache__")
_SKIPPED_SUFFIXES = (".pyc",)


@dataclass(frozen=True)
class PackManifest:
    """The validated fields of a pack.yaml."""

    ref: str
    name: str
    description: str
    version: str
    author: str
    email: str | None
    keywords: tuple[str, ...]
    stackstorm_version: str | None
    python_versions: tuple[str, ...]
    contributors: tuple[str, ...]
    dependencies: tuple[str, ...]
    system: dict[str, Any]


def normalize_version(value: Any) -> Any:
    """StackStorm's pack version normalisation: a YAML number becomes text, ``x.y`` becomes ``x.y.0``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        value = str(value)
    if isinstance(value, str) and value.count(".") == 1:
        value = f"{value}.0"
    return value


def parse_manifest(pack: PackDir) -> PackManifest:
    """Validate a pack's manifest; ContentError naming the field and line when it is wrong."""
    data = dict(pack.manifest.data)
    if "version" in data:
        data["version"] = normalize_version(data["version"])
    schemas.validate(schemas.PACK_SCHEMA, data, path=str(pack.manifest.path), pack=pack.ref,
                     line_of=pack.manifest.line_of)
    return PackManifest(
        ref=pack.ref,
        name=data["name"],
        description=data["description"],
        version=data["version"],
        author=data["author"],
        email=data.get("email"),
        keywords=tuple(data.get("keywords") or ()),
        stackstorm_version=data.get("stackstorm_version"),
        python_versions=tuple(data.get("python_versions") or ()),
        contributors=tuple(data.get("contributors") or ()),
        dependencies=tuple(data.get("dependencies") or ()),
        system=dict(data.get("system") or {}),
    )


def pack_files(folder: Path) -> list[str]:
    """Every file of the pack relative to its folder, except compiled Python and VCS data."""
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
        for name in sorted(names):
            if not name.endswith(_SKIPPED_SUFFIXES):
                files.append((Path(root) / name).relative_to(folder).as_posix())
    return files


def register_pack(run: "Registration", pack: PackDir) -> bool:
    """Upsert one pack record; True when it was written."""
    manifest = parse_manifest(pack)
    fields = {
        "name": manifest.name,
        "description": manifest.description,
        "version": manifest.version,
        "author": manifest.author,
        "email": manifest.email,
        "keywords": list(manifest.keywords),
        "stackstorm_version": manifest.stackstorm_version,
        "python_versions": list(manifest.python_versions),
        "contributors": list(manifest.contributors),
        "dependencies": list(manifest.dependencies),
        "system": manifest.system,
        "files": pack_files(pack.path),
        "path": str(pack.path),
    }
    _, changed = run.upsert(PackDB, {"ref": manifest.ref}, fields)
    if changed:
        LOG.info("pack %s registered from %s", manifest.ref, pack.path)
    return changed


class PackCatalog:
    """The packs of one registration run: discovered once, each registered once."""

    def __init__(self, run: "Registration", paths: Iterable[Path]) -> None:
        self.run = run
        self.paths = list(paths)
        self._packs: list[PackDir] | None = None

    def all(self) -> list[PackDir]:
        """The usable packs in search order, their records registered."""
        if self._packs is None:
            self._packs = self._register_all()
        return self._packs

    def _register_all(self) -> list[PackDir]:
        report = self.run.report
        found = discover(self.paths)
        report.warnings.extend(found.warnings)
        report.start(KIND)
        for error in found.errors:
            report.fail(KIND, error)
        usable = []
        for pack in found.packs:
            try:
                changed = register_pack(self.run, pack)
            except ContentError as exc:
                report.fail(KIND, exc)
                continue
            report.count(KIND, changed)
            usable.append(pack)
        return usable
