"""The leaderboard on screen (nsdflow.evaluate.leaderboard): the table, its order, its labels."""

import subprocess
import sys

import pandas as pd
from conftest import nsdflow_env

from nsdflow.evaluate.leaderboard import leaderboard_frame, leaderboard_text, model_kinds, render

BOARD = pd.DataFrame([
    {"model": m, "split": s, "challenge_score": score, "chance_score": 5.0 + (s == "test"), "mean_r": score / 100}
    for m, scores in {"ridge": (30.0, 31.0), "soup": (33.0, 29.5), "mlp": (20.0, 35.25)}.items()
    for s, score in zip(("val", "test"), scores)
])


def test_one_row_per_model_best_test_score_first():
    frame = leaderboard_frame(BOARD)
    assert list(frame["model"]) == ["mlp", "ridge", "soup"]
    assert list(frame.columns) == ["model", "score_val", "chance_val", "mean_r_val", "score_test", "chance_test",
                                   "mean_r_test"]
    assert frame.loc[0, "score_test"] == 35.25 and frame.loc[0, "score_val"] == 20.0


def test_without_test_responses_validation_orders_it():
    frame = leaderboard_frame(BOARD[BOARD["split"] == "val"])
    assert list(frame["model"]) == ["soup", "ridge", "mlp"] and "score_test" not in frame


def test_render_aligns_columns_and_marks_the_submission():
    text = render(leaderboard_frame(BOARD, {"ridge": "ridge", "soup": "ensemble: mean", "mlp": "mlp"}), "soup")
    lines = text.splitlines()
    assert lines[0].split() == ["model", "readout", "val", "score", "val", "chance", "val", "mean", "r", "test",
                                "score", "test", "chance", "test", "mean", "r"]
    assert len({len(line) for line in lines}) == 1  # a fixed-width table
    soup = next(line for line in lines if line.startswith("soup *"))
    assert "ensemble: mean" in soup and "33.00" in soup and "29.50" in soup and "0.295" in soup


def test_kinds_name_readouts_grids_and_ensemble_methods():
    config = {"models": {"a": {"readout": "ridge"},
                         "g": {"readout": "gaussian", "features": ["x/1", "x/2"], "grid": {"features": "subsets"}}},
              "ensembles": {"e": {"models": ["a", "g"], "method": "softmax"}}}
    assert model_kinds(config) == {"a": "ridge", "g.f0": "gaussian (grid g)", "g.f1": "gaussian (grid g)",
                                   "g.f01": "gaussian (grid g)", "e": "ensemble: softmax per vertex"}


def test_the_command_says_when_there_is_nothing_to_show(tmp_path):
    assert leaderboard_text(tmp_path) is None
    proc = subprocess.run([sys.executable, "-m", "nsdflow.cli", "leaderboard", str(tmp_path)], capture_output=True,
                          text=True, env=nsdflow_env())
    assert proc.returncode != 0 and "no leaderboard" in proc.stderr and "run snakemake first" in proc.stderr
