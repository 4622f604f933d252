"""Draw trio_msg's state machines from the tables the core runs.

``trio_msg._protocol.state`` holds the connection and channel machines as
dicts mapping ``(state, input)`` to the next state.  This extension provides::

    .. state-table:: connection      (or: channel)
       :diagram:                     (optional: only the diagram)
       :table:                       (optional: only the table)

which renders, from ``CONNECTION_TRANSITIONS`` / ``CHANNEL_TRANSITIONS``:

* a table of state x input -> next state, and
* a diagram: an SVG generated here in plain Python (boxes and arrows, no
  Graphviz, no Mermaid, no network), written to the HTML build's ``_images``
  directory and shown with an ``<img>``.  Builders other than HTML get a
  text rendering of the same graph in a literal block.

Layout (an "arc diagram", deterministic and crossing-light): the states sit
on one row in the enum's order (which is the order of their life cycle).
A transition to a later state is a bracket above the row, one to an earlier
state a bracket below it, a transition to the same state a loop under its
box.  An input that takes every state (or every state but one or two) to the
same place -- ``lost``, ``protocol-error``, ``connection closed`` -- is drawn
once, from a dashed "any state" box, instead of once per state.
"""

from __future__ import annotations

import enum
import html
import os
import posixpath
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

MACHINES = {
    "connection": ("CONNECTION_TRANSITIONS", "ConnectionState"),
    "channel": ("CHANNEL_TRANSITIONS", "ChannelState"),
}


def load(machine: str) -> tuple[Mapping[tuple[enum.Enum, str], enum.Enum], type[enum.Enum]]:
    from trio_msg._protocol import state

    table_name, enum_name = MACHINES[machine]
    return getattr(state, table_name), getattr(state, enum_name)


# --- the graph -----------------------------------------------------------------------


@dataclass
class Node:
    key: str  # state name, or "*n" for an any-state box
    label: list[str]
    dashed: bool = False
    x: float = 0.0
    width: float = 0.0


@dataclass
class Edge:
    src: str
    dst: str
    inputs: list[str] = field(default_factory=list)


def build_graph(
    table: Mapping[tuple[enum.Enum, str], enum.Enum], states: type[enum.Enum]
) -> tuple[list[Node], list[Edge]]:
    """Nodes in drawing order and edges with their inputs merged per pair."""
    all_states = list(states)
    by_input: dict[str, dict[enum.Enum, enum.Enum]] = defaultdict(dict)
    for (state, what), nxt in table.items():
        by_input[what][state] = nxt

    # Inputs that take (almost) every state to one place become one edge
    # from an "any state" box; inputs with the same source set share a box.
    wildcard: dict[frozenset[enum.Enum], list[str]] = defaultdict(list)
    for what, moves in by_input.items():
        targets = set(moves.values())
        excluded = [s for s in all_states if s not in moves]
        if len(targets) == 1 and len(moves) >= 3 and len(excluded) <= 2:
            wildcard[frozenset(moves)].append(what)

    nodes_: list[Node] = []
    edges: dict[tuple[str, str], Edge] = {}
    for i, (sources, inputs) in enumerate(wildcard.items()):
        excluded = [s.name for s in all_states if s not in sources]
        label = ["any state"] if not excluded else ["any state but", ", ".join(excluded)]
        key = f"*{i}"
        nodes_.append(Node(key, label, dashed=True))
        for what in inputs:
            (target,) = set(by_input[what].values())
            edges.setdefault((key, target.name), Edge(key, target.name)).inputs.append(what)
    wild_inputs = {
        (s, what) for sources, inputs in wildcard.items() for what in inputs for s in sources
    }
    for state in all_states:
        nodes_.append(Node(state.name, [state.name]))
    for (state, what), nxt in table.items():
        if (state, what) in wild_inputs:
            continue
        edges.setdefault((state.name, nxt.name), Edge(state.name, nxt.name)).inputs.append(what)
    return nodes_, list(edges.values())


# --- SVG -----------------------------------------------------------------------------

FONT = 12  # px, monospace: about 0.6 em a character
LABEL_FONT = 11
CHAR = 0.6
LINE = 14  # px between label lines
BOX_H = 34
GAP = 36  # px between boxes
PORT = 12  # px between attachment points on a box side
PAD = 12


def _text_width(text: str, size: float) -> float:
    return len(text) * size * CHAR


def render_svg(nodes_: list[Node], edges: list[Edge], title: str) -> str:
    index = {n.key: i for i, n in enumerate(nodes_)}
    above = [e for e in edges if index[e.dst] > index[e.src]]
    below = [e for e in edges if index[e.dst] < index[e.src]]
    loops = [e for e in edges if e.src == e.dst]

    def span(e: Edge) -> int:
        return abs(index[e.dst] - index[e.src])

    # Attachment points, per node and side: arcs to the left attach on the
    # left, arcs to the right on the right, and the shorter (lower) an arc,
    # the nearer the box's edge, so that a tall arc's vertical never cuts a
    # lower arc's horizontal at the same node.
    ports: dict[tuple[str, str], list[tuple[Edge, str]]] = defaultdict(list)
    for side, group in (("top", above), ("bottom", below)):
        for e in group:
            ports[(e.src, side)].append((e, "src"))
            ports[(e.dst, side)].append((e, "dst"))

    loop_lines = {e.src: sum(len(_wrap(w)) for w in e.inputs) for e in loops}
    x = PAD
    for n in nodes_:
        need_text = max(_text_width(line, FONT) for line in n.label) + 2 * PAD
        need_ports = max((len(ports[(n.key, side)]) + 1) * PORT for side in ("top", "bottom"))
        loop_w = 0.0
        for e in loops:
            if e.src == n.key:
                loop_w = (
                    max(_text_width(line, LABEL_FONT) for w in e.inputs for line in _wrap(w)) + 8
                )
        n.width = max(need_text, need_ports, 64.0)
        extra = max(0.0, (loop_w - n.width) / 2)
        n.x = x + extra
        x = n.x + n.width + extra + GAP
    total_w = x - GAP + PAD

    def port_x(node_key: str, side: str, e: Edge, end: str) -> float:
        n = nodes_[index[node_key]]
        items = ports[(node_key, side)]
        me = index[node_key]

        def order(item: tuple[Edge, str]) -> tuple[int, int]:
            edge, which = item
            other = index[edge.dst] if which == "src" else index[edge.src]
            if other < me:  # goes left: shortest leftmost
                return (0, span(edge))
            return (1, -span(edge))  # goes right: shortest rightmost

        ranked = sorted(items, key=order)
        k = ranked.index((e, end))
        step = n.width / (len(ranked) + 1)
        return n.x + step * (k + 1)

    # Levels: one per arc, shortest innermost; each level as tall as its label.
    def levels(group: list[Edge]) -> list[tuple[Edge, float]]:
        out = []
        y = 0.0
        for e in sorted(group, key=lambda e: (span(e), index[min(e.src, e.dst, key=index.get)])):
            lines = sum(len(_wrap(w)) for w in e.inputs)
            y += LINE * lines + 10
            out.append((e, y))
        return out

    top = levels(above)
    bottom = levels(below)
    top_h = (top[-1][1] if top else 0) + 18
    loop_h = (max(loop_lines.values()) * LINE + 30) if loops else 0
    bottom_h = (bottom[-1][1] if bottom else 0) + 12
    box_y = PAD + 22 + top_h  # room for the title
    total_h = box_y + BOX_H + loop_h + bottom_h + PAD

    out: list[str] = []
    add = out.append
    add(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w:.0f}" height="{total_h:.0f}" '
        f'viewBox="0 0 {total_w:.0f} {total_h:.0f}" font-family="monospace" role="img">'
    )
    add(f"<title>{html.escape(title)}</title>")
    add(
        "<defs><marker id='arrow' viewBox='0 0 10 10' refX='10' refY='5' markerWidth='7' "
        "markerHeight='7' orient='auto-start-reverse'><path d='M0,0 L10,5 L0,10 z' "
        "fill='#333'/></marker></defs>"
    )
    add('<rect width="100%" height="100%" fill="white"/>')
    add(
        f'<text x="{PAD}" y="{PAD + 12}" font-size="{FONT + 1}" font-weight="bold" '
        f'fill="#222">{html.escape(title)}</text>'
    )

    labels: list[str] = []

    def label(cx: float, cy: float, lines: list[str], anchor_top: bool) -> None:
        """A label block centred on cx; its bottom (or top) edge at cy."""
        w = max(_text_width(s, LABEL_FONT) for s in lines) + 6
        h = LINE * len(lines) + 2
        y0 = cy - h if not anchor_top else cy
        labels.append(
            f'<rect x="{cx - w / 2:.1f}" y="{y0:.1f}" width="{w:.1f}" height="{h:.1f}" '
            f'fill="white" fill-opacity="0.85"/>'
        )
        for k, s in enumerate(lines):
            labels.append(
                f'<text x="{cx:.1f}" y="{y0 + LINE * (k + 1) - 3:.1f}" font-size="{LABEL_FONT}" '
                f'text-anchor="middle" fill="#1a4d80">{html.escape(s)}</text>'
            )

    def lines_of(e: Edge) -> list[str]:
        return [line for w in e.inputs for line in _wrap(w)]

    for e, lvl in top:
        x1 = port_x(e.src, "top", e, "src")
        x2 = port_x(e.dst, "top", e, "dst")
        y = box_y - lvl
        add(
            f'<path d="M{x1:.1f},{box_y:.1f} V{y:.1f} H{x2:.1f} V{box_y - 1:.1f}" fill="none" '
            f'stroke="#333" stroke-width="1.2" marker-end="url(#arrow)"/>'
        )
        label((x1 + x2) / 2, y - 1, lines_of(e), anchor_top=False)

    bottom_base = box_y + BOX_H + loop_h
    for e, lvl in bottom:
        x1 = port_x(e.src, "bottom", e, "src")
        x2 = port_x(e.dst, "bottom", e, "dst")
        y = bottom_base + lvl
        add(
            f'<path d="M{x1:.1f},{box_y + BOX_H:.1f} V{y:.1f} H{x2:.1f} V{box_y + BOX_H + 1:.1f}" '
            f'fill="none" stroke="#333" stroke-width="1.2" marker-end="url(#arrow)"/>'
        )
        label((x1 + x2) / 2, y + 1, lines_of(e), anchor_top=True)

    for e in loops:
        n = nodes_[index[e.src]]
        cx = n.x + n.width / 2
        y0 = box_y + BOX_H
        add(
            f'<path d="M{cx - 10:.1f},{y0:.1f} C{cx - 22:.1f},{y0 + 26:.1f} {cx + 22:.1f},{y0 + 26:.1f} '
            f'{cx + 10:.1f},{y0 + 1:.1f}" fill="none" stroke="#333" stroke-width="1.2" '
            f'marker-end="url(#arrow)"/>'
        )
        label(cx, y0 + 24, lines_of(e), anchor_top=True)

    for n in nodes_:
        dash = ' stroke-dasharray="5,3"' if n.dashed else ""
        fill = "#f4f4f4" if n.dashed else "#e8f0fa"
        add(
            f'<rect x="{n.x:.1f}" y="{box_y:.1f}" width="{n.width:.1f}" height="{BOX_H}" rx="6" '
            f'fill="{fill}" stroke="#333" stroke-width="1.2"{dash}/>'
        )
        size = FONT if len(n.label) == 1 else FONT - 1
        first = box_y + BOX_H / 2 - (len(n.label) - 1) * (size + 1) / 2 + size * 0.35
        for k, s in enumerate(n.label):
            weight = "" if n.dashed else ' font-weight="bold"'
            add(
                f'<text x="{n.x + n.width / 2:.1f}" y="{first + k * (size + 1):.1f}" '
                f'font-size="{size}" text-anchor="middle" fill="#111"{weight}>{html.escape(s)}</text>'
            )
    out.extend(labels)
    add("</svg>")
    return "\n".join(out) + "\n"


def _wrap(text: str, width: int = 32) -> list[str]:
    """Split a long input name (``recv Connection.UpdateSecretOk``) at spaces."""
    if len(text) <= width or " " not in text:
        return [text]
    head, _, tail = text.partition(" ")
    return [head, *_wrap(tail, width)]


def render_text(nodes_: list[Node], edges: list[Edge]) -> str:
    """The same graph as text, for builders that cannot show SVG."""
    names = {n.key: " ".join(n.label) for n in nodes_}
    order = {n.key: i for i, n in enumerate(nodes_)}
    width = max(len(names[e.src]) for e in edges)
    lines = []
    for e in sorted(edges, key=lambda e: (order[e.src], order[e.dst])):
        arrow = "-->" if e.src != e.dst else "--+"
        lines.append(f"{names[e.src]:<{width}} {arrow} {names[e.dst]:<14} [{' | '.join(e.inputs)}]")
    return "\n".join(lines)


# --- Sphinx glue -----------------------------------------------------------------------


class state_diagram(nodes.General, nodes.Element):
    """Holds the SVG and its text fallback until the writer places them."""


def visit_diagram_html(self: Any, node: state_diagram) -> None:
    builder = self.builder
    images = os.path.join(builder.outdir, builder.imagedir)
    os.makedirs(images, exist_ok=True)
    filename = f"statediagram-{node['machine']}.svg"
    with open(os.path.join(images, filename), "w", encoding="utf-8") as f:
        f.write(node["svg"])
    here = posixpath.dirname(builder.get_target_uri(builder.current_docname))
    src = posixpath.relpath(posixpath.join(builder.imagedir, filename), here or ".")
    alt = html.escape(node["alt"], quote=True)
    self.body.append(
        f'<div class="state-diagram" style="overflow-x:auto;margin:1em 0">'
        f'<a href="{src}"><img src="{src}" alt="{alt}" style="max-width:none"/></a></div>\n'
    )
    raise nodes.SkipNode


def to_text(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """Builders that cannot show the SVG get the text rendering instead."""
    if app.builder.format == "html":
        return
    for node in list(doctree.findall(state_diagram)):
        node.replace_self(nodes.literal_block(node["text"], node["text"]))


def skip(self: Any, node: state_diagram) -> None:
    raise nodes.SkipNode


class StateTableDirective(SphinxDirective):
    required_arguments = 1
    has_content = False
    option_spec = {"diagram": directives.flag, "table": directives.flag}

    def run(self) -> list[nodes.Node]:
        machine = self.arguments[0].strip().lower()
        if machine not in MACHINES:
            raise self.error(
                f"state-table: unknown machine {machine!r}; use one of {sorted(MACHINES)}"
            )
        table, states = load(machine)
        from trio_msg._protocol import state as state_module

        if state_module.__file__:
            self.env.note_dependency(state_module.__file__)
        show_table = "table" in self.options or "diagram" not in self.options
        show_diagram = "diagram" in self.options or "table" not in self.options
        result: list[nodes.Node] = []
        if show_diagram:
            result.append(self._diagram(machine, table, states))
        if show_table:
            result.append(self._table(machine, table, states))
        return result

    def _diagram(self, machine: str, table: Any, states: type[enum.Enum]) -> nodes.Node:
        nodes_, edges = build_graph(table, states)
        node = state_diagram()
        node["machine"] = machine
        node["svg"] = render_svg(nodes_, edges, f"{machine} states ({MACHINES[machine][0]})")
        node["text"] = render_text(nodes_, edges)
        node["alt"] = f"The {machine} state machine:\n" + node["text"]
        return node

    def _table(self, machine: str, table: Any, states: type[enum.Enum]) -> nodes.Node:
        order = {s: i for i, s in enumerate(states)}
        rows = sorted(table.items(), key=lambda kv: (order[kv[0][0]], kv[0][1]))
        tbl = nodes.table(classes=["state-table"])
        tbl += nodes.title(text=f"{MACHINES[machine][0]}: state x input -> next state")
        group = nodes.tgroup(cols=3)
        tbl += group
        for width in (16, 34, 16):  # characters in text output; proportions in HTML
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        group += head
        head += self._row(["State", "Input", "Next state"], literal=False)
        body = nodes.tbody()
        group += body
        previous = None
        for (state, what), nxt in rows:
            first = state.name if state is not previous else ""
            previous = state
            body += self._row([first, what, nxt.name], literal=True)
        return tbl

    @staticmethod
    def _row(cells: list[str], literal: bool) -> nodes.row:
        row = nodes.row()
        for text in cells:
            entry = nodes.entry()
            para = nodes.paragraph()
            if text:
                para += nodes.literal(text, text) if literal else nodes.Text(text)
            entry += para
            row += entry
        return row


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_node(
        state_diagram,
        html=(visit_diagram_html, None),
        epub=(visit_diagram_html, None),
        latex=(skip, None),
        text=(skip, None),
        man=(skip, None),
        texinfo=(skip, None),
    )
    app.add_directive("state-table", StateTableDirective)
    app.connect("doctree-resolved", to_text)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
