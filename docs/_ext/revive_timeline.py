"""Draws docs/_static/revive_timeline.svg, the reconnect timeline in revive.rst.

Plain Python, no dependency: ``python3 docs/_ext/revive_timeline.py``
rewrites the SVG (committed; the docs build does not run this).
"""

from pathlib import Path
from xml.sax.saxutils import escape

W = 760
# (title, what happens (lines), what the code sees (lines))
stages = [
    (
        "Connection lost",
        ["the socket breaks, heartbeats stop,", "or the broker forces it closed"],
        [
            "Lost(error, reviving=True)",
            "in-flight publish: MessageOutcomeUnknown",
            "publish() and async for: they wait",
        ],
    ),
    (
        "Backoff attempts",
        ["the retry policy's waits; each", "attempt tries every host once"],
        [
            "Reviving(attempt, delay, error)",
            "still waiting (your cancel scope bounds it)",
            "retries out: ConnectionFailed",
        ],
    ),
    (
        "Reconnected",
        ["TCP, TLS and the AMQP handshake", "on a new connection"],
        ["nothing yet: the connection is", "not handed out before step 4"],
    ),
    (
        "Topology replayed",
        ["the declaration ledger, in the order", "of first declaration"],
        ["Revived(incarnation, attempts, downtime)", "wait_connected() returns"],
    ),
    (
        "Channels reopened",
        ["each Producer and Consumer opens", "a new channel (confirms, qos)"],
        ["old message's ack(): MessageStateError"],
    ),
    (
        "Consumers resumed",
        ["queues declared again,", "basic.consume again"],
        ["async for yields again; unacked", "messages return with redelivered=True"],
    ),
    (
        "Publishes retried, confirmed",
        ["retry=True publishes the lost", "message again (at least once)"],
        ["the waiting publish() returns", "once the broker confirms"],
    ),
]
x_dot, x_mid, x_right = 24, 46, 380
row_gap, line_h = 16, 18
y = 50
rows = []
for title, what, sees in stages:
    n = max(1 + len(what), len(sees))
    rows.append((y, n * line_h, title, what, sees))
    y += n * line_h + row_gap
H = y + 4
mono = 'font-family="DejaVu Sans Mono, Menlo, Consolas, monospace"'
out = [
    f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
    'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="14" fill="#222">',
    "<title>A reconnect, step by step: what happens, and what your code sees</title>",
    f'<rect width="{W}" height="{H}" fill="#fff"/>',
    f'<text x="{x_mid}" y="22" font-weight="bold" font-size="15">What happens</text>',
    f'<text x="{x_right}" y="22" font-weight="bold" font-size="15">Your code sees (blue: a watch() event)</text>',
    f'<line x1="0" y1="32" x2="{W}" y2="32" stroke="#bbb"/>',
]


def band(a, b, fill, label, color):
    y0, y1 = rows[a][0] - 17, rows[b][0] + rows[b][1] - 6
    out.append(f'<rect x="2" y="{y0}" width="{W - 4}" height="{y1 - y0}" fill="{fill}" rx="6"/>')
    out.append(
        f'<text x="{W - 12}" y="{y1 - 8}" text-anchor="end" font-size="12" fill="{color}" font-style="italic">{label}</text>'
    )


band(0, 1, "#fdecea", "the broker is away", "#a33")
band(2, 6, "#eaf5ea", "back: the same Connection carries on", "#2a6a2a")
out.append(
    f'<line x1="{x_dot}" y1="{rows[0][0] - 5}" x2="{x_dot}" y2="{H - 12}" stroke="#555" stroke-width="2"/>'
)
out.append(
    f'<path d="M{x_dot - 5},{H - 16} L{x_dot},{H - 5} L{x_dot + 5},{H - 16} Z" fill="#555"/>'
)
out.append(f'<text x="{x_dot + 10}" y="{H - 6}" font-size="11" fill="#555">time</text>')
for i, (ry, _h, title, what, sees) in enumerate(rows):
    color = "#c0392b" if i < 2 else "#2e7d32"
    out.append(
        f'<circle cx="{x_dot}" cy="{ry - 5}" r="6" fill="{color}" stroke="#fff" stroke-width="2"/>'
    )
    out.append(f'<text x="{x_mid}" y="{ry}" font-weight="bold">{i + 1}. {escape(title)}</text>')
    for k, t in enumerate(what):
        out.append(
            f'<text x="{x_mid}" y="{ry + line_h * (k + 1)}" font-size="13" fill="#444">{escape(t)}</text>'
        )
    for k, s in enumerate(sees):
        ev = s.split("(")[0] in ("Lost", "Reviving", "Revived")
        fill = ' fill="#1f5fa8" font-weight="bold"' if ev else ""
        out.append(
            f'<text x="{x_right}" y="{ry + k * line_h}" {mono} font-size="12.5"{fill}>{escape(s)}</text>'
        )
out.append("</svg>")
(Path(__file__).resolve().parent.parent / "_static" / "revive_timeline.svg").write_text(
    "\n".join(out) + "\n"
)
