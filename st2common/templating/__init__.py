"""Templating: the one Jinja environment and rendering of parameter values."""

from st2common.templating.datastore import revealed, st2kv_context
from st2common.templating.render import (
    contains_template,
    environment,
    is_template,
    render,
    render_value,
    variables,
)

__all__ = ["contains_template", "environment", "is_template", "render", "render_value", "revealed",
           "st2kv_context", "variables"]
