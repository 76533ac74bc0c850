"""Output the way StackStorm's CLI prints it: tables, Property/Value tables,
execution results, JSON and YAML; dotted attribute selection; dates and statuses.

Everything here takes plain dicts (API documents) and returns text.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from prettytable import PrettyTable

Transforms = Mapping[str, Callable[[Any], Any]]

MIN_ID_COL_WIDTH = 26
MIN_COL_WIDTH = 5
# A status cell carries "succeeded (1234s elapsed)" and colour codes: never wrap it.
STATUS_COL_WIDTH = 24
DEFAULT_TERMINAL_COLUMNS = 150
DEFAULT_DISPLAY_ORDER = ("id", "name", "pack", "description")

RED, PURPLE, GREEN, YELLOW, BLUE, BROWN, ENDC = (
    "\033[91m", "\033[35m", "\033[92m", "\033[93m", "\033[94m", "\033[33m", "\033[0m")
STATUS_COLORS = {"succeeded": GREEN, "delayed": BLUE, "failed": RED, "timeout": BROWN, "running": YELLOW}
COLOR_TERMINALS = ("xterm", "xterm-color", "screen", "vt100", "vt100-color", "xterm-256color")
COMPLETED_STATUSES = ("succeeded", "failed", "timeout", "canceled", "abandoned")


def colors_enabled(stream=None) -> bool:
    """Colour only on a terminal that supports it, and not when ST2_COLORIZE disables it."""
    stream = stream or sys.stdout
    term = (os.environ.get("TERM") or "").lower()
    isatty = getattr(stream, "isatty", lambda: False)
    return bool(isatty()) and term in COLOR_TERMINALS and not os.environ.get("ST2_COLORIZE")


def colorize(text: str, color: str, enabled: bool) -> str:
    """text wrapped in an ANSI colour when enabled."""
    return f"{color}{text}{ENDC}" if enabled and color else text


def format_status(value: Any, color: bool = False) -> Any:
    """Colour the status word of "succeeded (3s elapsed)"."""
    if not isinstance(value, str):
        return value
    status, sep, rest = value.partition("(")
    status = status.strip()
    shown = colorize(status, STATUS_COLORS.get(status, YELLOW), color)
    return f"{shown} ({rest}" if sep else shown


def parse_isodate(value: str) -> datetime:
    """A datetime from an ISO-8601 string; naive values are UTC."""
    parsed = datetime.fromisoformat(str(value).strip().replace(" ", "T", 1))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def format_isodate(value: Any, tz: str | None = "UTC") -> str:
    """ "2024-01-01T00:00:00.000000Z" -> "Mon, 01 Jan 2024 00:00:00 UTC" in the given zone."""
    if not value:
        return ""
    try:
        moment = parse_isodate(value)
    except ValueError:
        return str(value)
    if tz:
        try:
            moment = moment.astimezone(ZoneInfo(tz))
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return moment.strftime("%a, %d %b %Y %H:%M:%S %Z")


def with_elapsed(doc: dict, now: datetime | None = None) -> dict:
    """A copy whose status reads "running (5s elapsed)" / "succeeded (0s elapsed)"."""
    status, start, end = doc.get("status"), doc.get("start_timestamp"), doc.get("end_timestamp")
    try:
        if status == "running" and start:
            moment = now or datetime.now(timezone.utc)
            seconds = int(moment.timestamp()) - int(parse_isodate(start).timestamp())
        elif status in COMPLETED_STATUSES and start and end:
            seconds = int(parse_isodate(end).timestamp()) - int(parse_isodate(start).timestamp())
        else:
            return doc
    except ValueError:
        return doc
    return dict(doc, status=f"{status} ({seconds}s elapsed)")


def get_value(doc: Any, key: str) -> Any:
    """doc["a"]["b"] for key "a.b"; None when any step is missing."""
    value = doc
    for part in key.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        else:
            return None
    return value


def select(doc: Mapping, keys: Iterable[str]) -> dict:
    """The subset of doc named by dotted keys, nested as in doc; missing keys left out."""
    result: dict = {}
    for key in keys:
        value = get_value(doc, key)
        if value is None:
            continue
        nested = result
        *parents, leaf = key.split(".")
        for parent in parents:
            nested = nested.setdefault(parent, {})
        nested[leaf] = value
    return result


def _docs(subject: Any, attributes: Iterable[str] | None) -> Any:
    attributes = list(attributes or [])

    def pick(doc: Mapping) -> dict:
        return dict(doc) if not attributes or "all" in attributes else select(doc, attributes)

    if isinstance(subject, Mapping):
        return pick(subject)
    return [pick(doc) for doc in subject]


def to_json(subject: Any, attributes: Iterable[str] | None = None) -> str:
    """JSON of one document or a list, limited to attributes ("all" or none: everything)."""
    return json.dumps(_docs(subject, attributes), indent=4, sort_keys=True)


def to_yaml(subject: Any, attributes: Iterable[str] | None = None) -> str:
    """YAML of one document or a list, limited to attributes."""
    return yaml.safe_dump(_docs(subject, attributes), indent=4, default_flow_style=False)


def _clean(value: Any) -> Any:
    # Stored results keep escaped newlines; show them as lines, drop carriage returns.
    if isinstance(value, str):
        value = value.replace("\\n", "\n").replace("\\r", "\r").replace('\\"', '"')
        value = value.replace("\r", "")
    return value


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        if not value:
            return ""
        if all(isinstance(item, str) for item in value):
            return ", ".join(value)
    if isinstance(value, dict) and not value:
        return ""
    return value


def terminal_columns() -> int:
    """Width of the terminal (COLUMNS first), 150 when there is none."""
    return shutil.get_terminal_size((DEFAULT_TERMINAL_COLUMNS, 24)).columns


def _column_widths(entries: list[dict], attributes: list[str]) -> list[int]:
    columns = terminal_columns()
    if attributes[0] == "id":
        ids = [str(e.get("id", "")) for e in entries]
        first = max([MIN_ID_COL_WIDTH] + [len(i) for i in ids])
        width = math.floor((columns - first) / len(attributes))
    else:
        width = first = math.floor(columns / len(attributes))
    widths, extra = [first], 0
    for index, name in enumerate(attributes[1:], start=1):
        if name == "status":
            widths.append(STATUS_COL_WIDTH)
            extra += STATUS_COL_WIDTH - width
        elif index == len(attributes) - 1 and extra:
            widths.append(max(width - extra, MIN_COL_WIDTH))
        else:
            widths.append(width)
    return widths


def table(entries: Iterable[Mapping], attributes: list[str], widths: list[int] | None = None,
          transforms: Transforms | None = None) -> str:
    """A multi-column table, one row per document, columns named by (dotted) attributes."""
    entries = [dict(e) for e in entries]
    transforms = transforms or {}
    if not attributes or "all" in attributes:
        attributes = sorted(k for k in entries[0] if not k.startswith("_")) if entries else []
    if not attributes:
        return ""
    if not widths:
        widths = _column_widths(entries, attributes)
    elif len(widths) != len(attributes):
        widths = [widths[0] if len(widths) == 1 else 28] * len(attributes)
    grid = PrettyTable()
    grid.field_names = attributes
    for name, width in zip(attributes, widths):
        grid.max_width[name] = width
    grid.padding_width, grid.align, grid.valign = 1, "l", "t"
    for entry in entries:
        row = []
        for name in attributes:
            value = _cell(get_value(entry, name))
            if name in transforms:
                value = transforms[name](value)
            row.append(_clean(value))
        grid.add_row(row)
    return grid.get_string()


def property_table(doc: Mapping, attributes: list[str] | None = None,
                   display_order: Iterable[str] = DEFAULT_DISPLAY_ORDER,
                   transforms: Transforms | None = None) -> str:
    """A Property / Value table of one document; dicts and lists shown as indented JSON."""
    transforms = transforms or {}
    if not attributes or "all" in attributes:
        attributes = sorted(k for k in doc if not k.startswith("_"))
    attributes = list(attributes)
    for name in reversed(list(display_order)):
        if name in attributes:
            attributes.remove(name)
            attributes.insert(0, name)
    grid = PrettyTable()
    grid.field_names = ["Property", "Value"]
    grid.max_width["Property"], grid.max_width["Value"] = 20, 60
    grid.padding_width, grid.align, grid.valign = 1, "l", "t"
    for name in attributes:
        value = get_value(doc, name)
        value = "" if value is None or (isinstance(value, (dict, list)) and not value) else value
        if name in transforms:
            value = transforms[name](value)
        if isinstance(value, (dict, list)):
            value = json.dumps(value, indent=4)
        grid.add_row([name, _clean(value)])
    return grid.get_string()


def _yaml_block(name: str, value: Any) -> str:
    # Dump {name: value} and cut the "name:" prefix so nested lines hang under the key.
    text = yaml.safe_dump({name: value}, default_flow_style=False, width=2 ** 31 - 1,
                          indent=2, allow_unicode=True)[len(name) + 2:-1]
    if isinstance(value, list):
        text = "\n".join("  " + line for line in text.split("\n"))
    return ("\n" + text).replace("\n\n", "\n")


def execution_result(doc: Mapping, attributes: list[str], transforms: Transforms | None = None,
                     key: str | None = None, color: bool = False) -> str:
    """ "name: value" lines for an execution; dicts and lists as YAML; -k prints one result key."""
    transforms = transforms or {}
    if key:
        value = get_value(doc.get("result") or {}, key)
        return _clean(str(value if not isinstance(value, (dict, list)) else json.dumps(value, indent=4)))
    lines = []
    for name in attributes:
        value = _clean(get_value(doc, name))
        if name in transforms:
            value = transforms[name](value)
        if isinstance(value, str) and value[:1] in "{[" and value[-1:] in "}]":
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = None
            value = parsed if isinstance(parsed, (dict, list)) else value
        if isinstance(value, (dict, list)):
            value = _yaml_block(name, value)
        lines.append(f"{colorize(name, BLUE, color)}: {value}")
    return "\n".join(lines)


def note_box(entity: str, limit: int, width: int = 0) -> str:
    """The "Only first N <entity> are displayed" box printed under a truncated list."""
    if limit == 1:
        message = f"Note: Only one {entity[:-1]} is displayed. Use -n/--last flag for more results."
    else:
        message = f"Note: Only first {limit} {entity} are displayed. Use -n/--last flag for more results."
    padding = max(width - len(message) - 3, 0)
    box = PrettyTable([""], right_padding_width=padding) if padding else PrettyTable([""])
    box.header = False
    box.add_row([message])
    return box.get_string()
