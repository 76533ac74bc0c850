"""Finding packs on disk and reading their YAML, keeping line numbers for error messages.

Search order is StackStorm's: ``[content] system_packs_base_path`` first, then
each of ``[content] packs_base_paths``. A folder is a pack when it holds a
``pack.yaml``. When two folders resolve to the same pack ref, the first one
found wins and the others are reported as shadowed. (StackStorm takes the
content from the first path but the pack record from the last; one answer for
both is what a user expects.)
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from st2common.content.schemas import PACK_REF_PATTERN
from st2common.exceptions import ContentError

LOG = logging.getLogger(__name__)

MANIFEST_FILE_NAME = "pack.yaml"
METADATA_EXTENSIONS = (".yaml", ".yml")
RESERVED_PACK_REFS = ("_global",)

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML file plus the line (1-based) where each key or item starts."""

    path: Path
    data: Any
    lines: Mapping[tuple, int] = field(default_factory=dict, repr=False)

    def line_of(self, where: Sequence[Any]) -> int | None:
        """The line of the deepest known part of a JSON path (the whole file: None)."""
        parts = tuple(where)
        while parts:
            if parts in self.lines:
                return self.lines[parts]
            parts = parts[:-1]
        return None


def _record_lines(node: yaml.Node, prefix: tuple, lines: dict[tuple, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                where = prefix + (key_node.value,)
                lines.setdefault(where, key_node.start_mark.line + 1)
                _record_lines(value_node, where, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            where = prefix + (index,)
            lines.setdefault(where, item.start_mark.line + 1)
            _record_lines(item, where, lines)


def load_yaml(path: Path, pack: str | None = None) -> YamlDocument:
    """Parse one YAML file; ContentError with the file and line when it cannot be read or parsed."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ContentError(f"cannot read file: {exc}", pack=pack, path=str(path)) from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "malformed YAML"
        raise ContentError(f"invalid YAML: {problem}", pack=pack, path=str(path), line=line) from None
    except yaml.YAMLError as exc:
        raise ContentError(f"invalid YAML: {exc}", pack=pack, path=str(path)) from None
    finally:
        loader.dispose()
    lines: dict[tuple, int] = {}
    if node is not None:
        _record_lines(node, (), lines)
    return YamlDocument(path=path, data=data, lines=lines)


def load_mapping(path: Path, pack: str | None = None) -> YamlDocument:
    """load_yaml, insisting the document is a mapping (every metadata file is one)."""
    document = load_yaml(path, pack)
    if not isinstance(document.data, dict):
        kind = "empty" if document.data is None else f"a {type(document.data).__name__}"
        raise ContentError(f"expected a mapping of fields, the file is {kind}", pack=pack, path=str(path), line=1)
    return document


@dataclass(frozen=True)
class PackDir:
    """A pack found on disk: its ref, its folder and its parsed manifest."""

    ref: str
    path: Path
    manifest: YamlDocument

    def metadata_files(self, folder: str) -> list[Path]:
        """The YAML files at the top level of one content folder, in name order."""
        base = self.path / folder
        if not base.is_dir():
            return []
        return sorted(p for p in base.iterdir()
                      if p.is_file() and p.suffix in METADATA_EXTENSIONS and not p.name.startswith("."))

    def relative(self, path: Path) -> str:
        """path relative to the pack folder, as StackStorm stores metadata_file."""
        return path.relative_to(self.path).as_posix()


@dataclass
class Discovery:
    """The packs found, plus what could not be used and why."""

    packs: list[PackDir] = field(default_factory=list)
    errors: list[ContentError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def search_paths(settings) -> list[Path]:
    """The pack base folders in search order, without duplicates."""
    content = settings.content
    candidates: list[Path | None] = [content.system_packs_base_path, *(content.packs_base_paths or ())]
    paths: list[Path] = []
    for candidate in candidates:
        if candidate is not None and Path(candidate) not in paths:
            paths.append(Path(candidate))
    return paths


def pack_ref(metadata: Mapping[str, Any], directory_name: str) -> str | None:
    """StackStorm's pack ref: ``ref`` if given, else a valid folder name, else a valid ``name``."""
    ref = metadata.get("ref")
    if ref:
        return str(ref)
    if re.match(PACK_REF_PATTERN, directory_name):
        return directory_name
    name = str(metadata.get("name") or "")
    if re.match(PACK_REF_PATTERN, name):
        return name
    return None


def _read_pack(folder: Path) -> PackDir:
    manifest_path = folder / MANIFEST_FILE_NAME
    manifest = load_mapping(manifest_path, pack=folder.name)
    ref = pack_ref(manifest.data, folder.name)
    if ref is None:
        raise ContentError(
            f'pack name "{manifest.data.get("name")}" holds characters other than a-z, 0-9 and "_" '
            'and no "ref" is given; add a "ref" field',
            pack=folder.name, path=str(manifest_path), line=manifest.line_of(["name"]), field="ref")
    if ref in RESERVED_PACK_REFS:
        raise ContentError(f'pack ref "{ref}" is reserved', pack=ref, path=str(manifest_path),
                           line=manifest.line_of(["ref"]) or manifest.line_of(["name"]), field="ref")
    return PackDir(ref=ref, path=folder, manifest=manifest)


def discover(paths: Iterable[Path]) -> Discovery:
    """Every pack under the base folders; the first folder found for a ref wins."""
    found = Discovery()
    seen: dict[str, PackDir] = {}
    for base in paths:
        if not base.is_dir():
            LOG.debug("pack base path %s does not exist, skipped", base)
            continue
        for folder in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if not (folder / MANIFEST_FILE_NAME).is_file():
                continue
            try:
                pack = _read_pack(folder)
            except ContentError as exc:
                found.errors.append(exc)
                continue
            if pack.ref in seen:
                message = (f'pack "{pack.ref}" at {folder} is shadowed by {seen[pack.ref].path}, '
                           'which comes first in the search path')
                LOG.warning("%s", message)
                found.warnings.append(message)
                continue
            seen[pack.ref] = pack
            found.packs.append(pack)
    return found
