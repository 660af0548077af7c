"""One self-contained HTML page: figures and thumbnails inlined as data URIs, plain CSS and JavaScript,
nothing fetched from the network when it is opened."""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from PIL import Image


@dataclass
class Section:
    """A titled block of the page; ``anchor`` is its id (navigation and tests find it by that)."""

    anchor: str
    title: str
    body: str
    intro: str = ""


@dataclass
class Report:
    """Every section of one test set, under one heading."""

    name: str
    protocol: str
    sections: list[Section] = field(default_factory=list)


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def figure_uri(fig) -> str:
    """A matplotlib figure as a PNG data URI (the figure is closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def figure_html(fig, alt: str) -> str:
    return f'<img class="plot" alt="{esc(alt)}" src="{figure_uri(fig)}">'


class Thumbnails:
    """JPEG thumbnails as data URIs, made once per image file (a gallery image recurs in many lists)."""

    def __init__(self, height: int = 96) -> None:
        self.height = height
        self._cache: dict[str, str] = {}

    def __call__(self, path: str) -> str:
        if path not in self._cache:
            self._cache[path] = self._make(path)
        return self._cache[path]

    def _make(self, path: str) -> str:
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                width = max(1, round(img.width * self.height / max(1, img.height)))
                img = img.resize((width, self.height), Image.Resampling.BILINEAR)
        except (OSError, ValueError, SyntaxError):
            img = Image.new("RGB", (self.height // 2, self.height), (200, 200, 200))  # missing/unreadable file
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=82)
        return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def table(header: Sequence[str], rows: Iterable[Sequence[object]], css_class: str = "") -> str:
    """An HTML table; cells are escaped unless they are :class:`Raw`."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell if isinstance(cell, Raw) else esc(cell)}</td>" for cell in row)
                   + "</tr>" for row in rows)
    return f'<table class="{esc(css_class)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


class Raw(str):
    """Already-safe HTML in a table cell."""


def fmt(value: float, digits: int = 2) -> str:
    return "–" if value != value else f"{value:.{digits}f}"  # NaN shows as a dash


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#c5cad3;font-size:13px}
nav{padding:8px 24px;background:#fff;border-bottom:1px solid #dde1e7;position:sticky;top:0;z-index:2;font-size:13px}
nav a{margin-right:14px;color:#2456c6;text-decoration:none}
main{padding:8px 24px 40px}
h2{font-size:18px;margin:28px 0 6px}h3{font-size:15px;margin:18px 0 6px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:10px 16px;margin:12px 0}
p.intro{color:#4a5263;font-size:13px;margin:2px 0 8px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #dde1e7;padding:4px 8px;text-align:right}th{background:#eef1f5}
td:first-child,th:first-child{text-align:left}
img.plot{max-width:100%;height:auto}.plots{display:flex;flex-wrap:wrap;gap:16px}
figure.plot{margin:0;width:410px}figure.plot figcaption{font-size:12px;color:#4a5263}
.filters{font-size:13px;margin:6px 0 10px}.filters label{margin-right:14px}
.ranklist,.mistakes{display:flex;align-items:flex-start;gap:6px;padding:6px 0;border-top:1px solid #eef1f5}
.ranklist figure,.mistakes figure{margin:0;text-align:center;font-size:11px;line-height:1.25}
.ranklist img,.mistakes img{display:block;border:3px solid transparent;border-radius:3px}
.ranklist .query img{border-color:#2456c6}.ranklist .query,.mistakes .query{margin-right:10px;min-width:80px}
.hit.match img{border-color:#1a9b4b}.hit.nonmatch img{border-color:#d23c3c}
.hit.match figcaption{color:#1a9b4b}.hit.nonmatch figcaption{color:#d23c3c}
.badge{display:inline-block;padding:0 5px;border-radius:3px;color:#fff;font-size:11px}
.badge.success{background:#1a9b4b}.badge.failure{background:#d23c3c}.badge.nomatch{background:#8a8f99}
#count{color:#4a5263}
"""

# Filters every rank list by the <select>s with data-filter="<attribute>" (value "" = any).
_JS = """
'use strict';
function applyFilters(block) {
  const selects = Array.from(block.querySelectorAll('select[data-filter]'));
  let shown = 0;
  const lists = block.querySelectorAll('.ranklist');
  lists.forEach(function (row) {
    const visible = selects.every(function (s) { return s.value === '' || row.dataset[s.dataset.filter] === s.value; });
    row.style.display = visible ? '' : 'none';
    if (visible) { shown += 1; }
  });
  const counter = block.querySelector('.shown');
  if (counter) { counter.textContent = shown + ' of ' + lists.length + ' queries shown'; }
}
document.querySelectorAll('.ranklists').forEach(function (block) {
  block.querySelectorAll('select[data-filter]').forEach(function (s) {
    s.addEventListener('change', function () { applyFilters(block); });
  });
  applyFilters(block);
});
"""


def render_page(title: str, subtitle: str, reports: Sequence[Report]) -> str:
    """The whole page: a header, a navigation bar and every report's sections."""
    nav = "".join(f'<a href="#{esc(s.anchor)}">{esc(r.name)}: {esc(s.title)}</a>' for r in reports for s in r.sections)
    parts = []
    for report in reports:
        parts.append(f'<h2 id="{esc(report.name)}">{esc(report.name)} <small>({esc(report.protocol)} protocol)'
                     "</small></h2>")
        for s in report.sections:
            intro = f'<p class="intro">{s.intro}</p>' if s.intro else ""
            parts.append(f'<section id="{esc(s.anchor)}"><h3>{esc(s.title)}</h3>{intro}{s.body}</section>')
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<style>{_CSS}</style></head><body><header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>"
            f"<nav>{nav}</nav><main>{''.join(parts)}</main><script>{_JS}</script></body></html>")
