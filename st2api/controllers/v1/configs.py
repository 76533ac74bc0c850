"""/configs: pack config values. GET list and one pack's, PUT validates against the schema and writes the file.

| request              | query        | answer                                                           |
| -------------------- | ------------ | ---------------------------------------------------------------- |
| GET /configs         | P (100),     | ``[{"id", "pack", "values"}]``, values as written (templates     |
|                      | show_secrets | unrendered), secret options ``********``                        |
| GET /configs/{pack}  | show_secrets | one pack's; 404 when the pack or its config is unknown           |
| PUT /configs/{pack}  | show_secrets | body = the values; 400 naming the option that does not fit the   |
|                      |              | schema; written to ``<configs_path>/<pack>.yaml`` and stored     |
"""

from __future__ import annotations

from typing import Any

import webob

from st2api.controllers.base import PAGING, Call, ResourceController, Route
from st2common.exceptions import NotFoundError
from st2common.models.api.base import mask_value
from st2common.models.db.pack import ConfigDB, ConfigSchemaDB, PackDB
from st2common.services import configs

SECRETS = {"show_secrets": "boolean"}
NOT_FOUND = 'Unable to identify resource with pack_ref "{pack}".'


class ConfigsController(ResourceController):
    """Pack configs, addressed by pack ref."""

    resource = "configs"
    model = ConfigDB
    supported_filters = {"pack": "pack"}
    default_sort = ("pack",)
    mandatory_retrieve = ("id", "pack")

    routes = (
        Route("GET", "", "get_all", {**PAGING, **SECRETS}),
        Route("GET", "{pack_ref}", "get_one", SECRETS),
        Route("PUT", "{pack_ref}", "put", SECRETS),
    )

    def to_api(self, doc: ConfigDB, call: Call, attributes: dict[str, Any] | None = None) -> dict[str, Any]:
        values = dict(doc.values or {})
        if call.mask_secrets:
            if attributes is None:
                attributes = configs.get_schema(doc.pack) or {}
            values = mask_value(values, configs.object_spec(attributes))
        return {"id": str(doc.pk), "pack": doc.pack, "values": values}

    def get_all(self, call: Call) -> webob.Response:
        """GET /configs."""
        schemas = {doc.pack: dict(doc.attributes or {}) for doc in self.state.access(ConfigSchemaDB).query()}
        return self.list_response(call, to_api=lambda doc, c: self.to_api(doc, c, schemas.get(doc.pack, {})))

    def _pack_config(self, pack: str) -> ConfigDB:
        if self.state.access(PackDB).get(ref=pack) is None:
            raise NotFoundError("pack", pack, NOT_FOUND.format(pack=pack))
        doc = self.access().get(pack=pack)
        if doc is None:
            raise NotFoundError("config", pack, NOT_FOUND.format(pack=pack))
        return doc

    def get_one(self, call: Call) -> dict[str, Any]:
        """GET /configs/{pack_ref}."""
        return self.to_api(self._pack_config(call.path["pack_ref"]), call)

    def put(self, call: Call) -> dict[str, Any]:
        """PUT /configs/{pack_ref}: the body is the whole set of values."""
        doc = configs.save(call.settings, call.path["pack_ref"], call.body(), self.state.publisher)
        return self.to_api(doc, call)
