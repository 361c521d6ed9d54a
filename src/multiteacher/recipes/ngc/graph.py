"""The NGC graph: nodes, edges, and the paths that reach each node.

Edge ids spell the path they compute: ``rgb>depth`` (direct), ``rgb>depth>normals`` (two-hop: the
edge depth -> normals applied to the prediction of rgb>depth), ``rgb+depth>normals`` (hyperedge:
sees the image and the prediction of rgb>depth). Every edge's output is one path's prediction at
its target node, so the teachers of a node are exactly the edges that end in it.
"""

from __future__ import annotations

from dataclasses import dataclass

from multiteacher.errors import ConfigError
from multiteacher.recipes.ngc.config import Config


@dataclass(frozen=True)
class Edge:
    """`inputs` are node names fed to the net: the input node as itself (ground truth), any other
    node as the output of the direct edge `rgb>node` (or its consensus, see GraphConfig)."""

    id: str
    kind: str  # "direct" | "two_hop" | "hyper"
    inputs: tuple[str, ...]
    target: str

    @property
    def via(self) -> str | None:
        """The intermediate node of a two-hop or hyper edge."""
        return None if self.kind == "direct" else self.inputs[-1]

    @property
    def slug(self) -> str:
        return self.id.replace(">", "-to-").replace("+", "-and-")


def output_nodes(cfg: Config) -> list[str]:
    return [n for n, c in cfg.nodes.items() if c.kind != "input"]


def direct_id(cfg: Config, node: str) -> str:
    return f"{cfg.input_node}>{node}"


def build_edges(cfg: Config) -> list[Edge]:
    """All edges, direct ones first (a topological order: two-hop edges need direct predictions)."""
    src = cfg.input_node
    outs = output_nodes(cfg)
    edges = [Edge(direct_id(cfg, y), "direct", (src,), y) for y in outs]
    for x in outs:
        for y in outs:
            if x == y:
                continue
            if cfg.graph.two_hop:
                edges.append(Edge(f"{src}>{x}>{y}", "two_hop", (x,), y))
            if cfg.graph.hyperedges:
                edges.append(Edge(f"{src}+{x}>{y}", "hyper", (src, x), y))
    known = {e.id for e in edges}
    unknown = sorted(set(cfg.graph.exclude) - known)
    if unknown:
        raise ConfigError(f"graph.exclude names unknown edges {unknown}; valid ids look like {edges[-1].id!r}")
    return [e for e in edges if e.id not in cfg.graph.exclude or e.kind == "direct"]


def paths_to(edges: list[Edge], node: str) -> list[Edge]:
    """The edges ending in `node`: one path each (the direct edge first)."""
    return sorted((e for e in edges if e.target == node), key=lambda e: e.kind != "direct")
