"""What the Snakemake report shows beside the figures: score tables and the run's provenance, as HTML.

``snakemake --report report.html`` embeds every output marked with ``report()``; it shows PNG,
SVG and HTML files in place and offers everything else as a download. So the tables are written
as small self-contained HTML pages too (the CSV and Parquet files stay the data), and so is the
provenance: the config, the backbones and the identity of their weights (from the feature
manifests), the package versions, the nsdflow version and the git commit.
"""

from __future__ import annotations

import html
import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from .layout import ROI_CLASSES, UNKNOWN

# numpy and pandas are imported where they are used: the Snakefile imports this module to stamp
# the provenance rule, and building the DAG should not wait for pandas.

#: Distributions whose versions the provenance records (those absent are listed as such).
PACKAGES = (
    "nsdflow", "snakemake", "numpy", "scipy", "pandas", "pyarrow", "zarr", "dask", "torch", "torchvision",
    "open_clip_torch", "segment-anything", "timm", "scikit-learn", "himalaya", "nilearn", "nibabel", "matplotlib",
    "pillow",
)

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


# ----------------------------------------------------------------------------- provenance


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution, None where it is not installed."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance_stamp(workflow_dir: str | Path | None) -> str:
    """A short hash of the git commit and the package versions: the provenance rule's rerun trigger.

    Cheap (no heavy import), so the Snakefile computes it when it builds the DAG; a new commit
    or an upgraded package then rewrites the provenance, and nothing else.
    """
    import hashlib

    state = {"git": git_state(workflow_dir).get("commit") if workflow_dir else None, "packages": package_versions()}
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:12]


def git_state(folder: str | Path) -> dict[str, Any]:
    """Commit, branch and whether tracked files differ from it, for the git checkout holding ``folder``.

    ``{"commit": None}`` where ``folder`` is not in a git checkout or git is not installed.
    """
    def git(*args):
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=20)

    try:
        head = git("rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "why": "git is not installed"}
    if head.returncode != 0:
        return {"commit": None, "why": "not a git checkout"}
    branch = git("rev-parse", "--abbrev-ref", "HEAD").stdout.strip()
    dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    return {"commit": head.stdout.strip(), "branch": branch, "modified_files": len(dirty.splitlines()) if dirty else 0}


def backbone_rows(manifests: dict[str, dict]) -> list[dict[str, Any]]:
    """One row per extracted backbone from its feature manifest (``results/features/<name>.json``)."""
    rows = []
    for name, man in manifests.items():
        spec = man.get("spec", {})
        weights = spec.get("weights", {})
        layers = man.get("layers", {})
        rows.append({
            "backbone": name, "kind": spec.get("kind"), "model": spec.get("model"),
            "weights": weights_text(weights),
            "layers": ", ".join(f"{layer} {spec.get('layers', {}).get(layer, {}).get('pool', '')} "
                                f"{'x'.join(map(str, info.get('shape', [])[1:]))}".replace("  ", " ")
                                for layer, info in layers.items()),
            "input_size": spec.get("input_size"), "dtype": spec.get("dtype"), "device": man.get("device"),
            "images": man.get("n_images"), "images_per_second": man.get("images_per_second"),
        })
    return rows


def weights_text(weights: dict) -> str:
    """The identity of a backbone's weights in one line: random seed, checkpoint and its hash, or tag."""
    init = weights.get("init")
    if init == "random":
        return f"random initialisation (seed {weights.get('seed')}): not trained"
    if init == "checkpoint":
        sha = weights.get("sha256")
        return f"checkpoint {weights.get('path')}" + (f", sha256 {sha}" if sha else "")
    if init == "pretrained":
        rest = {k: v for k, v in weights.items() if k not in ("init", "tag")}
        return f"pretrained tag {weights.get('tag')}" + (f" ({json.dumps(rest, sort_keys=True)})" if rest else "")
    return json.dumps(weights, sort_keys=True)


def collect_provenance(config: dict, manifests: dict[str, dict], workflow_dir: str | Path | None) -> dict[str, Any]:
    """Everything the report says about how the results were made, as one JSON-able dict."""
    from . import __version__

    return {
        "nsdflow_version": __version__,
        "git": git_state(workflow_dir) if workflow_dir else {"commit": None, "why": "workflow folder unknown"},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "backbones": backbone_rows(manifests),
        "manifests": manifests,
        "config": config,
    }


def provenance_html(prov: dict[str, Any]) -> str:
    """The provenance as a readable page: run, packages, config."""
    import pandas as pd
    import yaml

    git = prov["git"]
    if git.get("commit"):
        state = "" if not git.get("modified_files") else f", {git['modified_files']} tracked files modified"
        commit = f"<code>{html.escape(git['commit'])}</code> (branch {html.escape(str(git.get('branch')))}{state})"
    else:
        commit = f"none ({html.escape(git.get('why', ''))})"
    run = pd.DataFrame([
        ("nsdflow", prov["nsdflow_version"]), ("git commit", commit), ("Python", prov["python"]),
        ("platform", prov["platform"]),
    ], columns=["", "value"])
    body = ["<p class=\"note\">How these results were made: the workflow's version and git commit, Python and "
            "the installed packages, and the configuration. Every rule also carries a hash of its stage's code, "
            "so a result made by other code would have been made again: the results reflect this commit (and, "
            "where tracked files were modified, those modifications).</p>", "<h2>Run</h2>",
            run.to_html(index=False, escape=False, header=False, border=0, classes="run").replace("<td>", "<td class=\"l\">")]
    body.append("<p>Backbones, their weights and layers: see <i>2. Features</i>.</p>")
    packages = pd.DataFrame([(k, v if v else "not installed") for k, v in prov["packages"].items()],
                            columns=["package", "version"])
    body += ["<h2>Packages</h2>", html_table(packages)]
    body += ["<h2>Configuration</h2>", "<p class=\"note\">The configuration the workflow ran with, defaults "
             "filled in.</p>", f"<pre>{html.escape(yaml.safe_dump(prov['config'], sort_keys=False))}</pre>"]
    return html_page("Provenance", "\n".join(body))


def features_html(prov: dict[str, Any]) -> str:
    """The backbones of the run: weights identity, layers stored, extraction device and speed."""
    import pandas as pd

    body = ["<p class=\"note\">One row per backbone, from its feature manifest "
            "(<code>results/features/&lt;backbone&gt;.json</code>), written when the features were extracted. "
            "<i>layers</i>: each stored layer, its pooling and the feature size per image. Randomly initialised "
            "backbones are untrained: their features carry only what their architecture does.</p>"]
    if prov["backbones"]:
        body.append(html_table(pd.DataFrame(prov["backbones"]), {"images_per_second": 1}))
    else:
        body.append("<p>No feature manifest was given.</p>")
    body.append("<details><summary>feature manifests (JSON)</summary>"
                f"<pre>{html.escape(json.dumps(prov['manifests'], indent=2, sort_keys=True))}</pre></details>")
    return html_page("Features: backbones and weights", "\n".join(body))
