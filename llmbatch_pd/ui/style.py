"""The look of every HTML block the package shows, and the escaping of outside text.

Colours, inline styles and the small pieces (badge, bar, table of figures, error list, card)
that the static summary (``ui.report``), the group table (``ui.grid``) and the live widgets
(``ui.card``, ``ui.panel``, ``ui.group``) are built of. The HTML is self-contained (inline
styles, no scripts, no external fonts) so it survives ``jupyter nbconvert --to html``, GitHub's
notebook viewer and an offline reader. Every string that comes from outside (model names,
error messages, stop reasons) goes through ``esc`` (HTML) or ``md`` (Markdown).
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, Any

from ..core import numbers as fmt

if TYPE_CHECKING:
    from .lines import Line

# -- look -----------------------------------------------------------------------------------
# Fills (bars, badges with white text) use fixed accent colours, which read on light and dark
# themes. Coloured TEXT cannot: a green dark enough for a white card is too dark for a dark one
# (#1a7f37 on JupyterLab's dark #212121 is 3.2:1; WCAG asks 4.5:1). So coloured text takes the
# theme's own hue (--jp-success/error/warn-color1) mixed 70/30 with its strongest text colour
# (--jp-ui-font-color0: black on light themes, white on dark ones): 7-8:1 on JupyterLab light,
# 6-9:1 on dark, and on a page without JupyterLab's variables (nbconvert's classic template, an
# offline reader) the light fallbacks in the var()s give the same dark-on-white result.
BLUE = "#2f6feb"
GREEN = "#1a7f37"
RED = "#cf222e"
AMBER = "#d29922"
GREY = "#6e7781"


def theme_text(jp_hue: str, fallback: str) -> str:
    """A text colour that keeps >= 4.5:1 on the card in light and dark themes (see above)."""
    return f"color-mix(in srgb, var({jp_hue}, {fallback}) 70%, var(--jp-ui-font-color0, #000))"


GREEN_TEXT = theme_text("--jp-success-color1", "#2da44e")
RED_TEXT = theme_text("--jp-error-color1", "#d32f2f")
AMBER_TEXT = theme_text("--jp-warn-color1", "#d97706")
TONES = {"ok": GREEN_TEXT, "bad": RED_TEXT, "warn": AMBER_TEXT, "info": BLUE, "muted": GREY, "": ""}
BADGE = {"ok": GREEN, "bad": RED, "warn": AMBER, "info": BLUE, "muted": GREY, "": GREY}

FONT = ("system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif")
TEXT = "var(--jp-ui-font-color1, #1f2328)"
MUTED = "var(--jp-ui-font-color2, #57606a)"
SURFACE = "var(--jp-layout-color1, #ffffff)"
BORDER = "var(--jp-border-color2, #d0d7de)"
TRACK = "var(--jp-layout-color2, #eaeef2)"  # a light track: the filled part carries the figure

CARD = (f"font-family:{FONT};font-size:13px;line-height:1.45;color:{TEXT};background:{SURFACE};"
        f"border:1px solid {BORDER};border-radius:8px;padding:10px 14px;max-width:760px;"
        "box-sizing:border-box;text-align:left;")
# JupyterLab and nbconvert style every table in rendered HTML (centred, right-aligned cells,
# zebra rows, hover); inline styles override all of that.
TABLE = ("border-collapse:collapse;border:none;margin:4px 0 0 0;width:auto;table-layout:auto;"
         "font-size:13px;color:inherit;background:transparent;")
TR = "background:transparent;border:none;"
TH = (f"text-align:left;font-weight:400;color:{MUTED};padding:1px 18px 1px 0;border:none;"
      "white-space:nowrap;vertical-align:top;background:transparent;")
TD = ("text-align:left;padding:1px 0;border:none;vertical-align:top;background:transparent;"
      "font-variant-numeric:tabular-nums;")


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def badge(label: str, tone: str) -> str:
    return (f'<span style="display:inline-block;padding:1px 9px;border-radius:999px;font-size:11px;'
            f'font-weight:600;letter-spacing:.03em;text-transform:uppercase;color:#fff;'
            f'background:{BADGE.get(tone, GREY)};white-space:nowrap">{esc(label)}</span>')


def colored(text_html: str, tone: str, *, bold: bool = False) -> str:
    color = TONES.get(tone, "")
    if not color and not bold:
        return text_html
    style = (f"color:{color};" if color else "") + ("font-weight:600;" if bold else "")
    return f'<span style="{style}">{text_html}</span>'


def muted(text_html: str) -> str:
    return f'<span style="color:{MUTED}">{text_html}</span>'


def bar_html(parts: list[tuple[float, str]], *, height: int = 6) -> str:
    """A thin stacked bar: ``parts`` are (fraction, colour) from the left."""
    segs = "".join(
        f'<div style="width:{max(0.0, min(1.0, f)) * 100:.2f}%;background:{c};height:100%"></div>'
        for f, c in parts if f > 0
    )
    return (f'<div style="display:flex;width:100%;height:{height}px;border-radius:{height}px;'
            f'overflow:hidden;background:{TRACK};margin:6px 0 4px 0">{segs}</div>')


def header_html(title: str, detail: str, status_label: str, tone: str) -> str:
    return (f'<div style="display:flex;align-items:center;gap:8px;flex-wrap:wrap">'
            f'<span style="font-weight:600">{esc(title)}</span>'
            f'<span style="color:{MUTED};overflow-wrap:anywhere">{esc(detail)}</span>'
            f'<span style="margin-left:auto">{badge(status_label, tone)}</span></div>')


def table_html(lines: list[Line]) -> str:
    rows = "".join(
        f'<tr style="{TR}"><th style="{TH}">{esc(ln.label)}</th><td style="{TD}">'
        f'{colored(esc(ln.value), ln.tone, bold=ln.tone in ("bad", "warn") and len(ln.value) < 40)}'
        f'{"&ensp;" + muted(esc(ln.note)) if ln.note else ""}</td></tr>'
        for ln in lines
    )
    return f'<table style="{TABLE}"><tbody>{rows}</tbody></table>'


def errors_html(errors: list[tuple[str, int]], *, title: str = "Top errors") -> str:
    if not errors:
        return ""
    items = "".join(
        f'<li style="margin:1px 0;padding:0;list-style:none;overflow-wrap:anywhere">'
        f'<span style="display:inline-block;min-width:3.2em;color:{RED_TEXT};font-weight:600;'
        f'font-variant-numeric:tabular-nums">×{fmt.count(n)}</span>{esc(one_line(msg))}</li>'
        for msg, n in errors
    )
    return (f'<div style="margin-top:6px"><div style="color:{MUTED}">{esc(title)}</div>'
            f'<ul style="margin:2px 0 0 0;padding:0;font-family:ui-monospace,SFMono-Regular,'
            f'Menlo,Consolas,monospace;font-size:12px">{items}</ul></div>')


def warnings_html(warnings: list[str]) -> str:
    if not warnings:
        return ""
    items = "".join(f'<li style="margin:1px 0;padding:0;list-style:none;overflow-wrap:anywhere">'
                    f'⚠ {esc(one_line(msg))}</li>' for msg in warnings)
    return f'<ul style="margin:6px 0 0 0;padding:0;color:{AMBER_TEXT}">{items}</ul>'


def card_html(inner: str, *, wide: bool = False) -> str:
    """The card around a static block. Notebook frontends typeset ``$...$`` in HTML outputs as
    LaTeX (JupyterLab, nbconvert's MathJax), which would turn "$0.10 expected $0.25" into
    math: the ignore classes switch MathJax 2 and 3 off for the card, and each dollar sign sits
    in its own element so no two of them share a text run even where the classes are unknown."""
    style = CARD.replace("max-width:760px", "max-width:100%") if wide else CARD  # wide: a table
    return (f'<div class="llmbatch-report tex2jax_ignore mathjax_ignore" style="{style}">'
            + _TEXT_RUN.sub(lambda m: m.group(0).replace("$", "<span>$</span>"), inner) + "</div>")


_TEXT_RUN = re.compile(r"(?<=>)[^<>]*\$[^<>]*(?=<)")


def one_line(text: Any) -> str:
    """``text`` with every run of whitespace (line breaks included) made one space."""
    return " ".join(str(text).split())


def md(text: Any) -> str:
    """Escape for a Markdown table cell: HTML, pipes, emphasis, dollars (MathJax), line breaks."""
    return esc(one_line(text)).replace("\\", "\\\\").replace("$", "\\$").replace("|", "\\|").replace("`", "\\`").replace("*", "\\*").replace("_", "\\_")

