"""The result on screen: the leaderboard as one table, and where the run's outputs are.

Printed by the workflow when a run succeeds (``onsuccess``) and by ``nsdflow leaderboard`` on
request (after a no-op rerun, or on another machine's results).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import results

#: The split a table is sorted by: the test split where the run has its responses (the demo),
#: else validation.
SORT_SPLITS = ("test", "val")


def model_kinds(config: dict) -> dict[str, str]:
    """What each scored name is, in a few words: its readout (``ridge``, ``ridge (grid levels)``)
    or its ensemble method (``ensemble: softmax per vertex``), from a run's config."""
    from ..plan import expand_grids
    from ..readouts.ensembles import METHOD_LABELS

    models, grids = expand_grids(config.get("models") or {})
    grid_of = {member: grid for grid, members in grids.items() for member in members}
    kinds = {name: m.get("readout", "?") + (f" (grid {grid_of[name]})" if name in grid_of else "")
             for name, m in models.items()}
    for name, e in (config.get("ensembles") or {}).items():
        method = e.get("method", "best")
        kinds[name] = f"ensemble: {METHOD_LABELS.get(method, method)}"
    return kinds


def leaderboard_frame(board: pd.DataFrame, kinds: dict[str, str] | None = None) -> pd.DataFrame:
    """The leaderboard (``results/scores/leaderboard.parquet``: a row per model and split) as one
    row per model: its kind, then per split the challenge score, its chance score and mean r;
    best first on the test split where there is one, else on validation."""
    splits = [s for s in ("val", "test") if s in set(board["split"])]
    wide = pd.DataFrame({"model": list(dict.fromkeys(board["model"]))}).set_index("model")
    if kinds is not None:
        wide["kind"] = [kinds.get(m, "") for m in wide.index]
    for split in splits:
        rows = board[board["split"] == split].set_index("model")
        wide[f"score_{split}"] = rows["challenge_score"]
        wide[f"chance_{split}"] = rows["chance_score"]
        wide[f"mean_r_{split}"] = rows["mean_r"]
    by = next((f"score_{s}" for s in SORT_SPLITS if s in splits), None)
    if by is not None:
        wide = wide.sort_values(by, ascending=False, kind="stable")
    return wide.reset_index()


def render(frame: pd.DataFrame, submission: str | None = None) -> str:
    """``frame`` (:func:`leaderboard_frame`) as a fixed-width table; the submitted model marked."""
    shown = frame.copy()
    if submission is not None:
        shown["model"] = [f"{m} *" if m == submission else m for m in shown["model"]]
    headers = {"model": "model", "kind": "readout", "score_val": "val score", "chance_val": "val chance",
               "mean_r_val": "val mean r", "score_test": "test score", "chance_test": "test chance",
               "mean_r_test": "test mean r"}
    formats = {c: ("{:.2f}" if c.startswith(("score", "chance")) else "{:.3f}") for c in shown if c not in
               ("model", "kind")}
    cells = [[headers[c] for c in shown]] + [
        [formats[c].format(v) if c in formats and pd.notna(v) else ("" if pd.isna(v) else str(v))
         for c, v in row.items()] for _, row in shown.iterrows()]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    text = [cells[0], ["-" * w for w in widths], *cells[1:]]
    left = {0, 1} if "kind" in shown else {0}
    return "\n".join("  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in text)


def where_lines(root: str | Path = ".", submission: str | None = None) -> list[str]:
    """Where the run's outputs are (those that exist under ``root``), and how to make the report."""
    root = Path(root)
    items = [("scores page", results.output("scores_page")),
             ("tables", results.output("summarize", "summary_csv").rsplit("/", 1)[0] + "/"),
             ("plots", results.RESULTS + "/plots/"),
             ("submission", results.output("submission", "zip")),
             ("provenance", results.output("provenance", "html"))]
    lines = [f"  {what + ':':13s}{path}" + (f" (model {submission})" if what == "submission" and submission else "")
             for what, path in items if (root / path).exists()]
    lines.append(f"  {'report:':13s}snakemake --report report.html (add the run's --configfile)")
    return lines


def leaderboard_text(root: str | Path = ".", config: dict | None = None) -> str | None:
    """The table and the outputs' places for the run in ``root`` (its config: ``config``, else the
    one its provenance recorded); None when the run has no leaderboard yet."""
    root = Path(root)
    path = root / results.output("summarize", "leaderboard_parquet")
    if not path.exists():
        return None
    if config is None:
        config = _recorded_config(root)
    submission = ((config or {}).get("submission") or {}).get("model")
    frame = leaderboard_frame(pd.read_parquet(path), model_kinds(config) if config else None)
    note = "challenge score: the organisers' mean of 100 * r^2 / NC; chance: the same for shuffled images"
    if submission:
        note += "; * the submitted model"
    return "\n".join([f"leaderboard ({results.output('summarize', 'leaderboard_csv')})", "",
                      render(frame, submission), "", note, "", "outputs:", *where_lines(root, submission)])


def _recorded_config(root: Path) -> dict | None:
    from ..io import read_json

    prov = root / results.output("provenance", "json")
    try:
        return read_json(prov).get("config")
    except (OSError, ValueError):
        return None
