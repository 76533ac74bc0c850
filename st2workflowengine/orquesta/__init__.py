"""The Orquesta workflow language and its pure conductor (no I/O)."""

from st2workflowengine.orquesta.conductor import WorkflowConductor
from st2workflowengine.orquesta.events import ActionRequest, NextTask, TaskEvent, WorkflowEvent
from st2workflowengine.orquesta.graph import WorkflowGraph
from st2workflowengine.orquesta.spec import WorkflowInspectionError, WorkflowSpec, parse

__all__ = [
    "ActionRequest", "NextTask", "TaskEvent", "WorkflowConductor", "WorkflowEvent", "WorkflowGraph",
    "WorkflowInspectionError", "WorkflowSpec", "parse",
]
