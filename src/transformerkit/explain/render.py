"""An :class:`~transformerkit.explain.walk.Explanation` as terminal text, Markdown, or one
self-contained HTML file: formulas drawn from their TeX by matplotlib's mathtext (inline SVG) and
every layer's per-head attention as a heatmap (inline PNG) — no network, no scripts."""

from __future__ import annotations

import base64
import functools
import html
import io
import warnings
from collections.abc import Iterator
from typing import Literal

from transformerkit.explain.language import FORMULAS
from transformerkit.explain.walk import Explanation, Figure, Step

Format = Literal["text", "markdown", "html"]
FORMATS: tuple[Format, ...] = ("text", "markdown", "html")
PART = "— "
"""A line that opens a part of a step (“— Multi-head self-attention”)."""


def blocks(lines: list[str]) -> Iterator[tuple[str, list[str]]]:
    """A step's lines grouped: ("part", [title]), ("table", indented lines), ("text", [line])."""
    table: list[str] = []
    for line in lines:
        if line.startswith("  "):
            table.append(line)
            continue
        if table:
            yield "table", table
            table = []
        yield ("part", [line.removeprefix(PART)]) if line.startswith(PART) else ("text", [line])
    if table:
        yield "table", table


def as_text(explanation: Explanation) -> str:
    out = [explanation.title, "=" * min(len(explanation.title), 100), *explanation.intro, ""]
    for step in explanation.steps:
        out += [step.title, "-" * min(len(step.title), 100)]
        out += [f"  {FORMULAS[key][0]}" for key in step.formulas]
        if step.formulas:
            out.append("")
        for kind, lines in blocks(step.lines):
            out += [f"[{lines[0]}]"] if kind == "part" else lines
        out.append("")
    return "\n".join(out)


def as_markdown(explanation: Explanation) -> str:
    out = [f"# {explanation.title}", "", *[f"{line}\n" for line in explanation.intro]]
    for step in explanation.steps:
        out += [f"## {step.title}", ""]
        for key in step.formulas:
            out += [f"$${FORMULAS[key][1]}$$", ""]
        for kind, lines in blocks(step.lines):
            if kind == "part":
                out += [f"### {lines[0]}", ""]
            elif kind == "table":
                out += ["```text", *lines, "```", ""]
            else:
                out += [lines[0], ""]
    return "\n".join(out)


@functools.cache
def formula_svg(tex: str) -> str:
    """The formula drawn by matplotlib's mathtext, as an inline SVG element."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(0.1, 0.1))
    figure.text(0, 0, f"${tex}$", fontsize=15)
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", pad_inches=0.05, transparent=True)
    plt.close(figure)
    svg = buffer.getvalue()
    return svg[svg.index("<svg"):]


def heatmap_png(figure: Figure) -> str:
    """Every head's weights of one layer side by side, as a base64 PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads, rows, columns = figure.weights.shape
    per_row = min(heads, 4)
    lines = -(-heads // per_row)
    cell = max(2.2, 0.22 * max(rows, columns) + 0.8)
    plot, axes = plt.subplots(lines, per_row, figsize=(cell * per_row, cell * lines), squeeze=False)
    small = max(rows, columns) <= 40
    for h, ax in enumerate(axes.flat):
        if h >= heads:
            ax.axis("off")
            continue
        ax.imshow(figure.weights[h].numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_title(f"h{h}", fontsize=8)
        if small:
            ax.set_xticks(range(columns), figure.columns, rotation=90, fontsize=6)
            ax.set_yticks(range(rows), figure.rows, fontsize=6)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
    plot.tight_layout()
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # a token in a script the installed fonts lack draws as a box
        warnings.simplefilter("ignore")
        plot.savefig(buffer, format="png", dpi=90)
    plt.close(plot)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


STYLE = """
body { font-family: system-ui, "Noto Sans CJK SC", "PingFang SC", sans-serif; max-width: 70rem; margin: 2rem auto;
       padding: 0 1rem; line-height: 1.5; color: #1d1d1f; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; border-bottom: 1px solid #ddd; margin-top: 2rem; }
h3 { font-size: 1rem; color: #444; margin-bottom: 0.2rem; }
pre { background: #f6f6f6; padding: 0.5rem; overflow-x: auto; font-size: 0.85rem; }
.formula { margin: 0.3rem 0 0.3rem 1rem; } .formula svg { max-width: 100%; height: auto; }
figure { margin: 1rem 0; } figure img { max-width: 100%; } figcaption { font-size: 0.85rem; color: #555; }
details summary { cursor: pointer; color: #0a58ca; }
"""


def as_html(explanation: Explanation) -> str:
    svgs = {key: formula_svg(FORMULAS[key][1]) for step in explanation.steps for key in step.formulas}
    body = [f"<h1>{html.escape(explanation.title)}</h1>", *[f"<p>{html.escape(line)}</p>" for line in explanation.intro]]
    for step in explanation.steps:
        body += [f"<h2>{html.escape(step.title)}</h2>", *step_formulas(step, svgs)]
        for kind, lines in blocks(step.lines):
            if kind == "part":
                body.append(f"<h3>{html.escape(lines[0])}</h3>")
            elif kind == "table":
                body.append(f"<pre>{html.escape(chr(10).join(lines))}</pre>")
            else:
                body.append(f"<p>{html.escape(lines[0])}</p>")
        for figure in step.figures:
            body.append(f'<figure><img alt="{html.escape(figure.caption)}" src="data:image/png;base64,'
                        f'{heatmap_png(figure)}"><figcaption>{html.escape(figure.caption)}</figcaption></figure>')
    language = "zh-CN" if explanation.language == "zh" else "en"
    return (f'<!DOCTYPE html>\n<html lang="{language}"><head><meta charset="utf-8">'
            f"<title>{html.escape(explanation.title)}</title><style>{STYLE}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")


def step_formulas(step: Step, svgs: dict[str, str]) -> list[str]:
    return [f'<div class="formula" title="{html.escape(FORMULAS[key][0])}">{svgs[key]}</div>'
            for key in step.formulas]


RENDERERS = {"text": as_text, "markdown": as_markdown, "html": as_html}


def render(explanation: Explanation, format: Format) -> str:
    if format not in RENDERERS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    return RENDERERS[format](explanation)

