"""HTML for the Snakemake report: self-contained pages (inline style, no script) and the scores page.

``snakemake --report report.html`` embeds every output marked with ``report()``; it shows PNG,
SVG and HTML files in place and offers everything else as a download. So the score tables are
rendered as a small page too (the CSV and Parquet files stay the data).
"""

from __future__ import annotations

import html
from typing import Any

from ..data.layout import ROI_CLASSES, UNKNOWN

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.2em 1.6em; color: #222; }
h1 { font-size: 1.3em; margin-bottom: 0.2em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
p.note { color: #555; font-size: 0.9em; max-width: 60em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.6em 0; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #ddd; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
tr:hover td { background: #f8f8ff; } td.na { color: #aaa; } td.best { font-weight: bold; }
pre { background: #f6f6f6; padding: 0.8em; font-size: 0.8em; overflow-x: auto; }
code { background: #f3f3f3; padding: 0 0.2em; }
details { margin: 0.4em 0; } summary { cursor: pointer; color: #225; }
"""


def html_page(title: str, body: str) -> str:
    """A standalone HTML page (inline style, no script, nothing fetched)."""
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


def _fmt(value: Any, digits: int) -> tuple[str, str]:
    """Cell text and class: NaN shown as an em dash, numbers to ``digits`` decimals."""
    import numpy as np

    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "&mdash;", "na"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}", ""
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{digits}f}", ""
    return html.escape(str(value)), "l"


def html_table(df, digits: dict[str, int] | None = None, best: dict[str, str] | None = None) -> str:
    """A DataFrame as an HTML table; ``best`` marks, per column, the row maximum (``"max"``) in bold."""
    digits = digits or {}
    best_rows = {}
    for col, how in (best or {}).items():
        if col in df and df[col].notna().any() and how == "max":
            best_rows[col] = df[col].idxmax()
    from pandas.api.types import is_numeric_dtype

    head = "".join(f"<th class=\"{'' if is_numeric_dtype(df[c]) else 'l'}\">{html.escape(str(c))}</th>" for c in df)
    rows = []
    for idx, row in df.iterrows():
        cells = []
        for col in df.columns:
            text, cls = _fmt(row[col], digits.get(col, 3))
            if best_rows.get(col) == idx:
                cls += " best"
            cells.append(f"<td class=\"{cls.strip()}\">{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>"


SPLIT_TEXT = {"val": "validation split (held-out training images)", "test": "test split (withheld responses)"}
_DIGITS = {"challenge_score": 2, "mean_score": 2, "chance_score": 2, "mean_nc": 1, "mean_r": 4, "median_r": 4,
           "q25_r": 4, "q75_r": 4}


def scores_html(tables: dict) -> str:
    """The three aggregations of the leaderboard as one readable page (the CSV files hold the same numbers)."""
    board, by_sh, by_roi = tables["leaderboard"], tables["by_subject_hemi"], tables["by_roi"]
    has_score = board["challenge_score"].notna().any()
    parts = ["<p class=\"note\">The organisers' score per vertex is <code>100 * min(max(r, 0)<sup>2</sup> / NC, 1)"
             "</code> (a noise ceiling NC of 0 replaced by 1e-14): percent of the noise ceiling. The leaderboard's "
             "number is its mean over every vertex of every subject and hemisphere; it also published the mean per "
             "subject and hemisphere and per ROI, pooled over subjects. <i>chance</i> is what the same predictions "
             "score matched to the wrong images. Constant predictions count as r = 0."
             + ("" if has_score else " No noise ceilings are known for this run, so only Pearson r is given.")
             + "</p>"]
    parts.append("<h2>Leaderboard: every vertex of every subject and hemisphere</h2>")
    cols = ["model", "split", "challenge_score", "chance_score", "mean_r", "median_r", "n_vertices", "mean_nc"]
    parts.append(html_table(board[[c for c in cols if c in board]], _DIGITS))
    value = "mean_score" if has_score else "mean_r"
    label = "score (% of noise ceiling)" if has_score else "mean Pearson r"
    for split in [s for s in ("val", "test") if s in set(board["split"])]:
        sh = by_sh[by_sh["split"] == split]
        wide = sh.pivot_table(index=["subject", "hemi"], columns="model", values=value, sort=False).reset_index()
        wide = wide[["subject", "hemi", *[m for m in dict.fromkeys(board["model"]) if m in wide]]]
        parts.append(f"<h2>Per subject and hemisphere: {label}, {SPLIT_TEXT.get(split, split)}</h2>")
        parts.append(html_table(wide, {c: _DIGITS[value] for c in wide.columns}))
        roi = by_roi[(by_roi["split"] == split) & (by_roi["roi"] != UNKNOWN)]
        wide = roi.pivot_table(index=["roi_class", "roi"], columns="model", values=value, sort=False, dropna=False)
        order = [(c, r) for c in ROI_CLASSES for r in ROI_CLASSES[c] if (c, r) in wide.index]
        wide = wide.reindex(order).reset_index()
        n = roi.groupby(["roi_class", "roi"], sort=False)["n_vertices"].max()
        wide.insert(2, "vertices", [int(n.get((c, r), 0)) for c, r in zip(wide["roi_class"], wide["roi"])])
        parts.append(f"<h2>Per ROI, pooled over subjects and hemispheres: {label}, {SPLIT_TEXT.get(split, split)}</h2>"
                     "<p class=\"note\">An ROI absent from every subject has 0 vertices and no score (&mdash;).</p>")
        parts.append(html_table(wide, {c: _DIGITS[value] for c in wide.columns}))
    return html_page("Scores", "\n".join(parts))
