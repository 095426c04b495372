"""The graph IR (see `graph.Graph` for its schema)."""

from .graph import Graph, Scope

__all__ = ["Graph", "Scope"]
