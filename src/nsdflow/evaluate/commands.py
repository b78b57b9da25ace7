"""The evaluate stage's commands: per-vertex scores of a model on a hemisphere (rule
score_vertices), the summary tables (rule summarize), the leaderboard on screen, and ``nsdflow
score`` for any predictions and responses."""

from __future__ import annotations

import json

from ..args import json_arg, pairs


def cmd_score_vertices(a) -> None:
    from .score import score_hemisphere

    table = score_hemisphere(a.pred, a.data, a.withheld, a.subject, a.hemi, a.regions, a.split, a.out)
    msg = f"{a.subject} {a.hemi}: mean r {table['r_val'].fillna(0).mean():.4f} (val)"
    if "score_val" in table:
        msg += f", score {table['score_val'].mean():.2f}"
    print(msg)


def cmd_summarize(a) -> None:
    from .summary import leaderboard_lines, summarize_files

    paths = {tuple(k.split(":")): v for k, v in pairs(a.vertices).items()}
    tables = summarize_files(paths, a.classes, a.outdir)
    print("\n".join(leaderboard_lines(tables["leaderboard"])))


def cmd_leaderboard(a) -> None:
    from .leaderboard import leaderboard_text

    text = leaderboard_text(a.directory)
    if text is None:
        raise SystemExit(f"nsdflow leaderboard: no leaderboard under {a.directory} yet "
                         "(results/scores/leaderboard.parquet): run snakemake first")
    print(text)


def cmd_score(a) -> None:
    import numpy as np

    from .scoring import score_arrays

    out = score_arrays(np.load(a.pred), np.load(a.true), np.load(a.noise_ceiling) if a.noise_ceiling else None,
                       per_vertex=a.per_vertex)
    text = json.dumps(out, indent=2)
    if a.out:
        from ..io import atomic_write_text

        atomic_write_text(a.out, text + "\n")
    print(text)


def register(add) -> None:
    s = add("score-vertices", cmd_score_vertices, "per-vertex scores of one model on one hemisphere (Parquet)")
    s.add_argument("--pred", required=True)
    s.add_argument("--data", required=True, help="data root holding subjXX/ folders")
    s.add_argument("--withheld", default=None)
    s.add_argument("--subject", required=True)
    s.add_argument("--hemi", required=True, choices=["lh", "rh"])
    s.add_argument("--regions", required=True)
    s.add_argument("--split", required=True)
    s.add_argument("--out", required=True)

    s = add("summarize", cmd_summarize, "tidy summary tables of per-vertex scores (CSV + Parquet)")
    s.add_argument("--vertices", nargs="+", required=True, help="MODEL:SUBJECT:HEMI=PARQUET")
    s.add_argument("--classes", type=json_arg, default=None)
    s.add_argument("--outdir", required=True)

    s = add("leaderboard", cmd_leaderboard, "print a finished run's leaderboard and where its outputs are")
    s.add_argument("directory", nargs="?", default=".", help="the run's folder (default: here)")

    s = add("score", cmd_score, "score predictions against responses: Pearson r and the challenge score, as JSON")
    s.add_argument("--pred", required=True, help=".npy predictions (images x vertices)")
    s.add_argument("--true", required=True, help=".npy measured responses (images x vertices)")
    s.add_argument("--noise-ceiling", help=".npy per-vertex noise ceilings (percent or fraction, detected)")
    s.add_argument("--per-vertex", help="also save per-vertex r as .npy")
    s.add_argument("--out", help="write the JSON here too")
