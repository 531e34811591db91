"""Self-contained HTML reports: figures embedded as base64 PNG, tables from plain dicts."""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list]
    note: str = ""
    lower_is_better: set[str] = field(default_factory=set)
    higher_is_better: set[str] = field(default_factory=set)

    def best_rows(self, col: int) -> set[int]:
        """Rows holding the best value of a column (all of them on a tie; none if all are equal)."""
        name = self.columns[col]
        vals = [(i, r[col]) for i, r in enumerate(self.rows)
                if isinstance(r[col], (int, float)) and r[col] == r[col]]
        if len(vals) < 2 or len({v for _, v in vals}) == 1:
            return set()
        if name in self.lower_is_better:
            best = min(v for _, v in vals)
        elif name in self.higher_is_better:
            best = max(v for _, v in vals)
        else:
            return set()
        return {i for i, v in vals if v == best}

    def to_markdown(self) -> str:
        best = {c: self.best_rows(c) for c in range(len(self.columns))}
        lines = ["| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns)]
        for i, r in enumerate(self.rows):
            cells = []
            for c, v in enumerate(r):
                s = _fmt(v)
                cells.append(f"**{s}**" if i in best[c] else s)
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_html(self) -> str:
        best = {c: self.best_rows(c) for c in range(len(self.columns))}
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = []
        for i, r in enumerate(self.rows):
            tds = []
            for c, v in enumerate(r):
                s = html.escape(_fmt(v))
                tds.append(f"<td class='best'>{s}</td>" if i in best[c] else f"<td>{s}</td>")
            body.append("<tr>" + "".join(tds) + "</tr>")
        note = f"<p class='note'>{html.escape(self.note)}</p>" if self.note else ""
        return (f"<h3>{html.escape(self.title)}</h3><table><thead><tr>{head}</tr></thead>"
                f"<tbody>{''.join(body)}</tbody></table>{note}")


def _fmt(v) -> str:
    if isinstance(v, float):
        if v != v:
            return "n/a"
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    return "" if v is None else str(v)


def img_tag(path: str | os.PathLike, caption: str = "", width: str = "100%") -> str:
    p = Path(path)
    if not p.exists():
        return f"<p class='missing'>(figure missing: {html.escape(p.name)})</p>"
    data = base64.b64encode(p.read_bytes()).decode()
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f"<figure><img style='max-width:{width}' src='data:image/png;base64,{data}'/>{cap}</figure>"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}td.best{font-weight:bold;background:#eef8ee}
figure{margin:1em 0}figcaption{color:#555;font-size:.9em}img{border:1px solid #ddd}
.note{color:#555;font-size:.9em}.banner{background:#fff6dd;border:1px solid #e8d38a;padding:.7em 1em;border-radius:4px}
.missing{color:#a00}
"""


def write_html(path: str | os.PathLike, title: str, sections: list[tuple[str, str]]) -> Path:
    """Write ``sections`` [(heading, html body)] as one self-contained page (atomically)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>" if heading else "")
        parts.append(body)
    parts.append("</body></html>")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("".join(parts))
    os.replace(tmp, out)
    return out


def image_grid(rows: list[list], col_titles: list[str] | None = None, row_titles: list[str] | None = None,
               cell: int = 128, pad: int = 3):
    """Tile RGB uint8 images (each resized to ``cell`` pixels high, keeping aspect) into one image.
    ``None`` entries leave a blank cell. Column and row titles are drawn with OpenCV's Hershey font."""
    import cv2
    import numpy as np

    def fit(img):
        if img is None:
            return None
        img = np.asarray(img)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        h, w = img.shape[:2]
        return cv2.resize(img, (max(1, round(w * cell / h)), cell), interpolation=cv2.INTER_AREA if h > cell else cv2.INTER_LINEAR)

    fitted = [[fit(i) for i in r] for r in rows]
    ncol = max(len(r) for r in fitted)
    widths = [max((r[c].shape[1] for r in fitted if c < len(r) and r[c] is not None), default=cell) for c in range(ncol)]
    head = 18 if col_titles else 0
    left = 110 if row_titles else 0
    H = head + len(fitted) * (cell + pad) + pad
    W = left + sum(widths) + pad * (ncol + 1)
    canvas = np.full((H, W, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    x = left + pad
    for c in range(ncol):
        if col_titles and c < len(col_titles):
            cv2.putText(canvas, col_titles[c][:28], (x + 2, 13), font, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
        x += widths[c] + pad
    for r, row in enumerate(fitted):
        y = head + pad + r * (cell + pad)
        if row_titles and r < len(row_titles):
            for j, part in enumerate(str(row_titles[r]).split("\n")[:4]):
                cv2.putText(canvas, part[:16], (4, y + 16 + 14 * j), font, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
        x = left + pad
        for c, img in enumerate(row):
            if img is not None:
                canvas[y:y + img.shape[0], x:x + img.shape[1]] = img
            x += widths[c] + pad
    return canvas
