"""The ActionChain language and its pure conductor; the service that runs chains lives in service.py."""

from st2workflowengine.actionchain.conductor import ChainConductor, ChainState, Child, Lookups, Step
from st2workflowengine.actionchain.spec import ChainSpec, ChainSpecError, Node, parse

__all__ = ["ChainConductor", "ChainSpec", "ChainSpecError", "ChainState", "Child", "Lookups", "Node", "Step",
           "parse"]
