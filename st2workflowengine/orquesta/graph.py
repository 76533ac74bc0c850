"""The task graph of a workflow: tasks are nodes, transitions are edges.

An edge runs from a task to each task named in one of its transitions' ``do``;
its id is ``<target>__t<transition index>`` seen from the source, and
``<source>__t<index>`` seen from the target (as orquesta names them). A task
with ``join`` is a barrier: one instance, run when enough inbound edges are
satisfied. A task without ``join`` that several edges reach, outside any
cycle, is a split: each arrival starts its own instance on its own route.
The graph is derived from the spec alone, so it is rebuilt, not stored.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import cached_property

from st2workflowengine.orquesta.spec import ENGINE_COMMANDS, TaskSpec, WorkflowSpec

ALL = "all"


@dataclass(frozen=True)
class Edge:
    """One way from a task to the next: the transition (by index) that leads there."""

    source: str
    target: str
    index: int
    when: str | None

    @property
    def next_id(self) -> str:
        """The edge's id in the source task's record of satisfied transitions."""
        return f"{self.target}__t{self.index}"

    @property
    def prev_id(self) -> str:
        """The edge's id in the target task's record of inbound transitions."""
        return f"{self.source}__t{self.index}"


class WorkflowGraph:
    """Edges, start tasks, barriers, splits and cycles of one workflow spec."""

    def __init__(self, spec: WorkflowSpec) -> None:
        self.spec = spec
        self.edges: list[Edge] = []
        for task in spec.tasks.values():
            for transition in task.next:
                for target in transition.do:
                    if target not in ENGINE_COMMANDS and target in spec.tasks:
                        self.edges.append(Edge(task.name, target, transition.index, transition.when))
        self._outbound: dict[str, list[Edge]] = {name: [] for name in spec.tasks}
        self._inbound: dict[str, list[Edge]] = {name: [] for name in spec.tasks}
        for edge in self.edges:
            self._outbound[edge.source].append(edge)
            self._inbound[edge.target].append(edge)

    def outbound(self, task: str) -> list[Edge]:
        """Edges leaving task, in transition then ``do`` order."""
        return self._outbound[task]

    def inbound(self, task: str) -> list[Edge]:
        """Edges arriving at task."""
        return self._inbound[task]

    @cached_property
    def start_tasks(self) -> list[str]:
        """Tasks no other task transitions to (a task looping on itself still starts)."""
        return [name for name in self.spec.tasks
                if not any(edge.source != name for edge in self._inbound[name])]

    @cached_property
    def _cyclic(self) -> frozenset[str]:
        cyclic = set()
        for name in self.spec.tasks:
            seen, stack = set(), [edge.target for edge in self._outbound[name]]
            while stack:
                current = stack.pop()
                if current == name:
                    cyclic.add(name)
                    break
                if current not in seen:
                    seen.add(current)
                    stack.extend(edge.target for edge in self._outbound[current])
        return frozenset(cyclic)

    def in_cycle(self, task: str) -> bool:
        """True when task can be reached again from itself."""
        return task in self._cyclic

    def task(self, name: str) -> TaskSpec:
        """The spec of a task in this graph."""
        return self.spec.tasks[name]

    def barrier(self, task: str) -> int | None:
        """How many inbound tasks must arrive before a join task runs; None if not a join.

        ``all`` counts tasks, not edges: a task that reaches the join from its
        success and from its failure transitions can only arrive once.
        """
        join = self.spec.tasks[task].join
        if join is None:
            return None
        return len({edge.source for edge in self._inbound[task]}) if join == ALL else int(join)

    def is_split(self, task: str) -> bool:
        """True when each arrival at task starts a separate instance on a new route."""
        return (self.spec.tasks[task].join is None and not self.in_cycle(task)
                and len(self._inbound[task]) > 1)

    def reachable(self) -> set[str]:
        """Tasks that some path from a start task reaches."""
        seen, stack = set(), list(self.start_tasks)
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(edge.target for edge in self._outbound[current])
        return seen

    @cached_property
    def _serialized(self) -> dict:
        return {
            "nodes": [{"id": name, "barrier": self.spec.tasks[name].join, "splits": self.is_split(name)}
                      for name in self.spec.tasks],
            "adjacency": [{"source": e.source, "target": e.target, "key": e.index, "criteria": e.when}
                          for e in self.edges],
        }

    def serialize(self) -> dict:
        """The graph as plain data, for the service to store beside the spec."""
        return self._serialized


@functools.lru_cache(maxsize=256)
def graph_of(spec: WorkflowSpec) -> WorkflowGraph:
    """The (shared, immutable) graph of a spec."""
    return WorkflowGraph(spec)
