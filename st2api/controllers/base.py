"""Routes, query parameters and the list/get/paginate conventions every resource controller shares.

Routing follows StackStorm's OpenAPI router rather than pecan's RestController:
each controller declares its routes as data (method, path pattern, handler,
declared query parameters). Only declared query parameters reach a handler,
cast as StackStorm casts them (booleans true/1/yes/y, integers, comma lists);
anything else is ignored, as StackStorm ignores it.

Lists follow ResourceController: ``limit`` (default per endpoint, ``-1`` for
all), ``offset``, ``sort`` (comma list of filter names, ``-``/``+`` prefixes),
``include_attributes`` / ``exclude_attributes`` (dotted names, mutually
exclusive), filters mapped to stored fields, and the ``X-Total-Count`` and
``X-Limit`` headers.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import webob
from bson import ObjectId
from webob.request import DisconnectionError

from st2api.errors import json_response
from st2common.exceptions import AccessDeniedError, NotFoundError, ValidationError
from st2common.persistence.access import Access, to_object_id

# Query parameter declarations: name -> type, as the OpenAPI spec declares them.
PAGING = {"limit": "integer", "offset": "integer", "sort": "string",
          "include_attributes": "array", "exclude_attributes": "array"}

_BOOL_TRUE = ("true", "1", "yes", "y")
_BOOL_FALSE = ("false", "0", "no", "n")
_INTEGER = re.compile(r"^-?[0-9]+$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
MAX_IN_VALUES = 100
# StackStorm's 404 messages per lookup rule.
_NOT_FOUND = {
    "ref": 'Resource with a reference or id "%s" not found',
    "name": 'Resource with a name or id "%s" not found',
    "pack_ref": 'Resource with a ref or id "%s" not found',
    "id": 'Unable to identify resource with id "%s".',
}
MAX_OFFSET = 2 ** 31


@dataclass(frozen=True)
class Route:
    """One operation: HTTP method, path pattern under the resource ({name} is one segment), handler name."""

    method: str
    pattern: str
    handler: str
    query: dict[str, str] = field(default_factory=dict)
    status: int = 200
    # Answered without credentials (token creation only).
    public: bool = False
    # A POST or PUT that changes nothing (inspection, tests): observers may call it.
    reads: bool = False
    # The permission named in a 403 when it is not <resource>_<verb> (StackStorm's inquiry_respond).
    permission: str = ""

    def __post_init__(self) -> None:
        # The pattern's segments, each (parameter name, None) or (None, literal text), split once.
        parts = tuple((p[1:-1], None) if p.startswith("{") and p.endswith("}") else (None, p)
                      for p in self.pattern.split("/") if p)
        object.__setattr__(self, "_parts", parts)

    def match(self, method: str, segments: list[str]) -> dict[str, str] | None:
        """The path parameters when this route takes method and segments, else None."""
        if method != self.method:
            return None
        parts = self._parts
        if len(parts) != len(segments):
            return None
        params: dict[str, str] = {}
        for (name, literal), segment in zip(parts, segments):
            if name is not None:
                if not segment:
                    return None
                params[name] = segment
            elif literal != segment:
                return None
        return params


def cast_query(declared: dict[str, str], raw: webob.multidict.MultiDict) -> dict[str, Any]:
    """The declared query parameters of raw, cast to their types; undeclared ones are dropped."""
    out: dict[str, Any] = {}
    for name, kind in declared.items():
        if name not in raw:
            continue
        value = raw.getall(name)[-1]
        if kind == "boolean":
            lowered = value.lower()
            if lowered not in _BOOL_TRUE + _BOOL_FALSE:
                raise ValidationError(f'Parameter "{name}" is not of type boolean', field=name)
            out[name] = lowered in _BOOL_TRUE
        elif kind == "integer":
            if not _INTEGER.search(value):
                raise ValidationError(f'Parameter "{name}" is not of type integer', field=name)
            out[name] = int(value)
        elif kind == "number":
            if not _NUMBER.search(value):
                raise ValidationError(f'Parameter "{name}" is not of type float', field=name)
            out[name] = float(value)
        elif kind == "array":
            out[name] = [part for part in value.split(",") if part != ""]
        else:
            out[name] = value
    return out


class Call:
    """One request as a handler sees it: path and query parameters, the body, response headers."""

    def __init__(self, state, request: webob.Request, path: dict[str, str], query: dict[str, Any],
                 identity=None) -> None:
        self.state = state
        self.request = request
        self.path = path
        self.query = query
        self.headers: dict[str, str] = {}
        # st2api.auth.Identity of the caller; None only on public routes.
        self.identity = identity

    @property
    def settings(self):
        return self.state.settings

    @property
    def mask_secrets(self) -> bool:
        """Whether secrets are masked in this response: show_secrets=true is honoured for admins only."""
        return self.settings.api.mask_secrets and not (self.query.get("show_secrets", False) and self.is_admin)

    @property
    def user(self) -> str:
        """Who asks (the system user on public routes)."""
        return self.identity.user if self.identity is not None else self.settings.system_user.user

    @property
    def roles(self) -> list[str]:
        """The caller's role names."""
        return list(self.identity.roles) if self.identity is not None else []

    @property
    def is_admin(self) -> bool:
        """True when the caller holds an admin role (everyone, with RBAC off)."""
        return self.identity is not None and self.identity.is_admin

    def body(self) -> Any:
        """The JSON body; an empty body is {} (StackStorm validates it all the same)."""
        raw = request_body(self.request)
        if not raw or not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ValidationError(f"Failed to parse request body: {exc}") from None


def request_body(request: webob.Request) -> bytes:
    """request.body, read straight from wsgi.input when the request declares its length.

    webob first copies the input into a seekable buffer through a length-limited
    reader and its attribute hooks, which costs more than the read. The bytes
    read are left in place as webob leaves them, so later readers get them too.
    """
    environ = request.environ
    length = environ.get("CONTENT_LENGTH") or ""
    if environ.get("webob.is_body_seekable") or not length.isdigit() or int(length) == 0:
        return request.body
    size = int(length)
    raw = environ["wsgi.input"].read(size)
    if len(raw) < size:
        raise DisconnectionError(f"The client disconnected while sending the body ({size - len(raw)} more bytes were "
                                 "expected)")
    environ["wsgi.input"] = io.BytesIO(raw)
    environ["webob.is_body_seekable"] = True
    return raw


def reply(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> webob.Response:
    """A JSON reply."""
    return json_response(data, status=status, headers=headers)


class Controller:
    """A resource's routes and handlers; handlers take a Call and return data or a webob Response."""

    #: The first path segment this controller serves ("actions").
    resource: str = ""
    routes: tuple[Route, ...] = ()

    def __init__(self, state) -> None:
        self.state = state

    def find(self, method: str, segments: list[str]) -> tuple[Route, dict[str, str]] | None:
        """The first route taking method and segments, with its path parameters."""
        for route in self.routes:
            params = route.match(method, segments)
            if params is not None:
                return route, params
        return None


class ResourceController(Controller):
    """Lists and lookups over one document type, with StackStorm's paging, sorting and projection.

    Subclasses set model and define ``to_api(doc, call) -> dict``.
    """

    model: type = None
    #: filter name -> stored field (dotted for sub-documents).
    supported_filters: dict[str, str] = {}
    default_sort: tuple[str, ...] = ()
    #: The limit when the client sends none; None returns everything.
    default_limit: int | None = 100
    #: Fields always read with include_attributes (keys, and what masking needs).
    mandatory_retrieve: tuple[str, ...] = ("id",)
    #: Fields always kept in a response filtered by include_attributes.
    mandatory_response: tuple[str, ...] = ("id",)
    #: The only attributes exclude_attributes may name (None: any).
    valid_exclude: tuple[str, ...] | None = None

    #: How a path id is looked up: "ref" (a dotted ref, else an id), "name" or "pack_ref"
    #: (an id first, then that field), or "id" only.
    lookup_by: str = "id"

    def access(self) -> Access:
        return self.state.access(self.model)

    def lookup(self, value: str):
        """The document a path id names, by StackStorm's rule for this resource; NotFoundError otherwise."""
        access = self.access()
        doc = None
        if self.lookup_by == "ref" and "." in value:
            doc = access.get(ref=value)
        else:
            oid = to_object_id(value)
            doc = access.get(id=oid) if oid is not None else None
            if doc is None and self.lookup_by == "name":
                doc = access.get(name=value)
            elif doc is None and self.lookup_by == "pack_ref":
                doc = access.get(ref=value)
        if doc is None:
            raise NotFoundError(access.resource_type, value, _NOT_FOUND[self.lookup_by] % value)
        return doc

    # -- lists --------------------------------------------------------------------------

    def list_response(self, call: Call, raw: dict[str, Any] | None = None,
                      sort: Iterable[str] | None = None,
                      to_api: Callable[[Any, Call], dict] | None = None) -> webob.Response:
        """GET /<resource>: filtered, sorted, paged, projected; with X-Total-Count and X-Limit."""
        include, exclude = self.attribute_filters(call)
        order = self.sort_order(call.query.get("sort"), sort or self.default_sort)
        offset = call.query.get("offset", 0)
        if offset < 0:
            raise ValidationError(f'Offset, "{offset}" specified, must be a positive number.', field="offset")
        if offset >= MAX_OFFSET:
            raise ValidationError(f'Offset "{offset}" specified is more than 32-bit int', field="offset")
        limit = self.effective_limit(call)
        query = dict(raw or {})
        query.update(self.filter_query(call))
        only, leave_out = self.projection(include, exclude)
        docs = self.access().query(raw=query, order_by=order, offset=offset, limit=limit,
                                   only=only, exclude=leave_out)
        total = self._total(docs, query, offset, limit)
        convert = to_api or self.to_api
        items = [self.shape(convert(doc, call), include, exclude) for doc in docs]
        headers = {"X-Total-Count": str(total)}
        if limit:
            headers["X-Limit"] = str(limit)
        return reply(items, headers=headers)

    def _total(self, docs: list, query: dict, offset: int, limit: int | None) -> int:
        # A filtered count is slow on the embedded server; a page that is not full already tells it.
        if docs and (limit is None or len(docs) < limit):
            return offset + len(docs)
        if not docs and offset == 0:
            return 0
        return self.access().count(raw=query)

    def effective_limit(self, call: Call) -> int | None:
        """The page size: StackStorm's limit rules; None means everything."""
        limit = call.query.get("limit")
        if limit is None:
            return self.default_limit
        if limit == -1:
            if not self.is_admin(call):
                raise AccessDeniedError("Administrator access required to be able to specify limit=-1 "
                                        "and retrieve all the records")
            return None
        if limit == 0:
            raise ValidationError(f'Limit, "{limit}" specified, must be a positive number or -1 for full '
                                  f"result set.", field="limit")
        if limit <= -2:
            raise ValidationError(f'Limit, "{limit}" specified, must be a positive number.', field="limit")
        max_page = call.settings.api.max_page_size
        if limit > max_page and not self.is_admin(call):
            raise AccessDeniedError(f'Limit "{limit}" specified, maximum value is "{max_page}"')
        return limit

    @staticmethod
    def is_admin(call: Call) -> bool:
        """True when the caller holds an admin role."""
        return call.is_admin

    def sort_order(self, sort: str | None, default: Iterable[str]) -> list[str]:
        """The sort keys of a ?sort= value mapped to stored fields; unknown keys are skipped."""
        keys = []
        for key in (sort or "").split(","):
            key = key.strip()
            direction = ""
            if key and key[0] in "+-":
                direction, key = key[0], key[1:]
            mapped = {"id": "id", "name": "name", **self.supported_filters}.get(key)
            if mapped:
                keys.append(direction + mapped)
        return keys or list(default)

    def filter_query(self, call: Call) -> dict[str, Any]:
        """A raw MongoDB filter for the supported filters present in the query."""
        query: dict[str, Any] = {}
        ids = call.query.get("id")
        if ids:
            query["_id"] = {"$in": self._object_ids(ids)}
        for name, stored in self.supported_filters.items():
            value = call.query.get(name)
            if value in (None, "", []):
                continue
            key, condition = self.filter_condition(name, stored, value)
            query[key] = condition
        return query

    def filter_condition(self, name: str, stored: str, value: Any) -> tuple[str, Any]:
        """(stored field, condition) for one filter value; "null" means the field is absent."""
        if isinstance(value, str) and value.lower() == "null":
            return stored, None
        if name == "name" and isinstance(value, str) and "," in value:
            return stored, {"$in": value.split(",")[:MAX_IN_VALUES]}
        if isinstance(value, list):
            return stored, {"$in": value[:MAX_IN_VALUES]}
        return stored, value

    @staticmethod
    def _object_ids(values: list[str]) -> list[ObjectId]:
        if len(values) > MAX_IN_VALUES:
            raise ValidationError(f"Maximum of {MAX_IN_VALUES} items can be provided for a query parameter value",
                                  field="id")
        return [oid for oid in (to_object_id(v) for v in values) if oid is not None]

    # -- include / exclude ----------------------------------------------------------------

    def attribute_filters(self, call: Call) -> tuple[list[str], list[str]]:
        """The include and exclude lists of the query, checked."""
        include = list(call.query.get("include_attributes") or [])
        exclude = list(call.query.get("exclude_attributes") or [])
        if include and exclude:
            raise ValidationError("exclude_attributes and include_attributes arguments are mutually exclusive. "
                                  "You need to provide either one or another, but not both.")
        if self.valid_exclude is not None:
            for name in exclude:
                if name not in self.valid_exclude:
                    raise ValidationError(f"Invalid or unsupported exclude attribute specified: {name}",
                                          field="exclude_attributes")
        return include, exclude

    def projection(self, include: list[str], exclude: list[str]) -> tuple[list[str], list[str]]:
        """Top-level stored fields to read (only) or to skip (exclude).

        Only top-level fields are projected: nested projections come back flat
        from the embedded server, so sub-fields are picked in Python (shape()).
        """
        fields = set(self.model._fields)
        if include:
            wanted = {path.split(".")[0] for path in include + list(self.mandatory_retrieve)}
            return sorted(name for name in wanted if name in fields and name != "id"), []
        if exclude:
            return [], sorted({path.split(".")[0] for path in exclude} & fields)
        return [], []

    def shape(self, item: dict[str, Any], include: list[str], exclude: list[str]) -> dict[str, Any]:
        """item pruned to the included (dotted) paths, or without the excluded top-level names."""
        if include:
            item = prune(item, include + list(self.mandatory_retrieve) + list(self.mandatory_response))
            keep = {path.split(".")[0] for path in include} | set(self.mandatory_response)
            return {k: v for k, v in item.items() if k in keep}
        if exclude:
            drop = {path.split(".")[0] for path in exclude}
            return {k: v for k, v in item.items() if k not in drop}
        return item

    def get_response(self, doc, call: Call) -> webob.Response:
        """GET /<resource>/{id}: one document, honouring include/exclude when the route declares them."""
        include, exclude = self.attribute_filters(call)
        return reply(self.shape(self.to_api(doc, call), include, exclude))


def prune(item: dict[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """item with only the given dotted paths (a bare name keeps the whole value)."""
    tree: dict[str, list[str]] = {}
    whole: set[str] = set()
    for path in paths:
        head, _, rest = path.partition(".")
        if rest:
            tree.setdefault(head, []).append(rest)
        else:
            whole.add(head)
    out = {}
    for key, value in item.items():
        if key in whole:
            out[key] = value
        elif key in tree:
            out[key] = prune(value, tree[key]) if isinstance(value, dict) else value
    return out
