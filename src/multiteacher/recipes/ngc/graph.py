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
    """One edge of the graph: a small net from `inputs` to `target`, and the path it computes.

    `inputs` are node names fed to the net: the input node as itself (ground truth), any other
    node as the output of the direct edge `rgb>node` (or its consensus, see GraphConfig).

    Args:
        id: the path it computes, e.g. ``rgb>depth>normals``.
        kind: "direct", "two_hop" or "hyper".
        inputs: node names fed to the net.
        target: the node it predicts.

    Example:
        >>> Edge("rgb>depth>normals", "two_hop", ("depth",), "normals").slug
        'rgb-to-depth-to-normals'
    """

    id: str
    kind: str  # "direct" | "two_hop" | "hyper"
    inputs: tuple[str, ...]
    target: str

    @property
    def via(self) -> str | None:
        """The intermediate node of a two-hop or hyper edge (None for a direct edge).

        Returns:
            A node name or None.

        Example:
            >>> Edge("rgb>depth>normals", "two_hop", ("depth",), "normals").via
            'depth'
        """
        return None if self.kind == "direct" else self.inputs[-1]

    @property
    def slug(self) -> str:
        """The id as a file name (``>`` -> ``-to-``, ``+`` -> ``-and-``).

        Returns:
            A file-name-safe string.

        Example:
            >>> Edge("rgb+depth>normals", "hyper", ("rgb", "depth"), "normals").slug
            'rgb-and-depth-to-normals'
        """
        return self.id.replace(">", "-to-").replace("+", "-and-")


def output_nodes(cfg: Config) -> list[str]:
    """The nodes edges predict (every node that is not an input), in config order.

    Args:
        cfg: the NGC config.

    Returns:
        Node names.

    Example:
        >>> output_nodes(Config(name="x"))
        ['depth', 'normals', 'semantic', 'height']
    """
    return [n for n, c in cfg.nodes.items() if c.kind != "input"]


def direct_id(cfg: Config, node: str) -> str:
    """The id of the direct edge into `node` (``<input>><node>``).

    Args:
        cfg: the NGC config.
        node: an output node.

    Returns:
        The edge id.

    Example:
        >>> direct_id(Config(name="x"), "depth")
        'rgb>depth'
    """
    return f"{cfg.input_node}>{node}"


def build_edges(cfg: Config) -> list[Edge]:
    """All edges, direct ones first (a topological order: two-hop edges need direct predictions).

    Args:
        cfg: the NGC config (nodes, graph options, excluded edges).

    Returns:
        The edges; ConfigError when `graph.exclude` names an unknown edge.

    Example:
        >>> len(build_edges(Config(name="x")))  # 4 direct + 12 two-hop
        16
    """
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
    """The edges ending in `node`: one path each (the direct edge first) — the node's teachers.

    Args:
        edges: all edges.
        node: an output node.

    Returns:
        The edges whose target is `node`.

    Example:
        >>> [e.id for e in paths_to(build_edges(Config(name="x")), "depth")][:2]
        ['rgb>depth', 'rgb>normals>depth']
    """
    return sorted((e for e in edges if e.target == node), key=lambda e: e.kind != "direct")
