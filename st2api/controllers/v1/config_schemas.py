"""/config_schemas: each pack's config.schema.yaml as registered, ``{"id", "pack", "attributes"}``.

The defaults of secret options are masked, as secret parameters' defaults
are, unless show_secrets=true.
"""

from __future__ import annotations

from typing import Any

import webob

from st2api.controllers.base import PAGING, Call, ResourceController, Route
from st2common.exceptions import NotFoundError
from st2common.models.api.base import mask_schema_defaults
from st2common.models.db.pack import ConfigSchemaDB

SECRETS = {"show_secrets": "boolean"}


class ConfigSchemasController(ResourceController):
    """Pack config schemas, addressed by pack ref."""

    resource = "config_schemas"
    model = ConfigSchemaDB
    supported_filters = {"pack": "pack"}
    default_sort = ("pack",)
    mandatory_retrieve = ("id", "pack")

    routes = (
        Route("GET", "", "get_all", {**PAGING, **SECRETS}),
        Route("GET", "{pack_ref}", "get_one", SECRETS),
    )

    def to_api(self, doc: ConfigSchemaDB, call: Call) -> dict[str, Any]:
        attributes = dict(doc.attributes or {})
        if call.mask_secrets:
            attributes = mask_schema_defaults(attributes)
        return {"id": str(doc.pk), "pack": doc.pack, "attributes": attributes}

    def get_all(self, call: Call) -> webob.Response:
        """GET /config_schemas."""
        return self.list_response(call)

    def get_one(self, call: Call) -> dict[str, Any]:
        """GET /config_schemas/{pack_ref}."""
        pack = call.path["pack_ref"]
        doc = self.access().get(pack=pack)
        if doc is None:
            raise NotFoundError("config_schema", pack, f'Unable to identify resource with pack_ref "{pack}".')
        return self.to_api(doc, call)
