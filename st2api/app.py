"""The pecan application factory."""

from __future__ import annotations

import pecan
from pecan import expose

from st2common import __version__


class RootController:
    """GET / and /v1: what answers here."""

    @expose("json")
    def index(self):
        return {"version": __version__, "docs_url": "https://docs.stackstorm.com/"}


def setup_app(settings):
    """A WSGI app serving the API for settings."""
    return pecan.make_app(RootController(), debug=False, force_canonical=False, guess_content_type_from_ext=False)
