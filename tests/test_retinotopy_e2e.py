"""The transformer decoder learns the demo's hidden retinotopy (issue: Adeli et al.'s decoder).

The demo places every retinotopic vertex's receptive field on the side opposite its hemisphere,
dorsal ROIs (V1d, V2d, V3d) in the lower visual field and ventral ones in the upper
(``nsdflow.data.demo``; +y is down the image). A decoder with one query per ROI should look
there: this runs the DAG on tests/configs/retinotopy.yaml (one subject, 1,000 training images,
20 epochs; about 2 minutes on 2 cores) up to ``plot_attention``'s table of attention centres,
and checks the V1d and V2d queries of both hemispheres against the hidden receptive fields.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, run_snakemake

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CONFIG = REPO / "tests" / "configs" / "retinotopy.yaml"
CONTRALATERAL = {"lh": 1.0, "rh": -1.0}  # +x is the right of the image, which the left hemisphere sees


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("retinotopy")
    shutil.copy(CONFIG, workdir / "config.yaml")
    run_snakemake(workdir, "results/plots/attention/alexnet_transformer/subj01.csv", "--cores", "2")
    return workdir


def hidden_centres(run, hemi: str) -> dict[str, np.ndarray]:
    """The mean hidden receptive-field centre (x, y) of each retinotopic ROI of subj01's ``hemi``."""
    from nsdflow.data.layout import ROI_CLASSES

    prf = np.load(run / f"results/demo/withheld/subj01/{hemi}_prf.npy")
    labels = np.load(run / f"results/demo/algonauts/subj01/roi_masks/{hemi}.prf-visualrois_challenge_space.npy")
    return {name: prf[labels == i + 1, :2].mean(axis=0)
            for i, name in enumerate(ROI_CLASSES["prf-visualrois"]) if (labels == i + 1).any()}


def centre(table: pd.DataFrame, hemi: str, roi: str) -> pd.Series:
    """The attention table's row of one query, by name."""
    rows = table[(table["hemi"] == hemi) & (table["query"] == roi)]
    assert len(rows) == 1, f"{hemi} {roi}: {len(rows)} rows in the attention table (queries: {sorted(set(table['query']))})"
    return rows.iloc[0]


def centres(run) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The attention centres (from plot_attention's table) and hidden receptive-field centres of
    every retinotopic ROI query, both hemispheres: ``(attention (14, 2), hidden (14, 2), names)``."""
    table = pd.read_csv(run / "results/plots/attention/alexnet_transformer/subj01.csv")
    got, hidden, names = [], [], []
    for hemi in ("lh", "rh"):
        for roi, truth in hidden_centres(run, hemi).items():
            row = centre(table, hemi, roi)
            got.append([row["x"], row["y"]])
            hidden.append(truth)
            names.append(f"{hemi} {roi}")
    return np.array(got), np.array(hidden), names


@pytest.mark.parametrize("hemi", ["lh", "rh"])
@pytest.mark.parametrize("roi", ["V1d", "V2d"])
def test_dorsal_early_queries_attend_to_the_lower_field_opposite_their_hemisphere(run, hemi, roi):
    """The issue's criterion, by sign. Measured (2 cores, torch 2.14.1): lh V1d (+0.15, +0.06), V2d
    (+0.03, +0.01), rh V1d (-0.15, +0.05), V2d (-0.14, +0.10); the hidden centres are lh (+0.41,
    +0.17) / (+0.30, +0.16), rh (-0.27, +0.17) / (-0.27, +0.30). lh V2d's margin is thin: the
    correlation test below is the robust one."""
    table = pd.read_csv(run / "results/plots/attention/alexnet_transformer/subj01.csv")
    row = centre(table, hemi, roi)
    truth = hidden_centres(run, hemi)[roi]
    assert np.sign(truth[0]) == CONTRALATERAL[hemi] and truth[1] > 0  # what the demo hid
    assert row["x"] * CONTRALATERAL[hemi] > 0, f"{hemi} {roi} attends at x {row['x']:+.2f}, not contralaterally"
    assert row["y"] > 0, f"{hemi} {roi} attends at y {row['y']:+.2f}, not in the lower field"


def test_query_centres_follow_the_hidden_receptive_fields(run):
    """Across the 14 ROI queries, where each looks correlates with where its ROI's receptive
    fields are, horizontally (the hemisphere's side) and vertically (dorsal below, ventral above).
    Measured: r 0.95 and 0.96 (attention centres are pulled towards the image's centre: a map
    spreads over a whole ROI's receptive fields)."""
    got, hidden, names = centres(run)
    for axis, name in enumerate("xy"):
        r = np.corrcoef(got[:, axis], hidden[:, axis])[0, 1]
        assert r > 0.8, f"attention {name} against the hidden {name}: r {r:.2f}; " + ", ".join(
            f"{n} {g:+.2f}/{h:+.2f}" for n, g, h in zip(names, got[:, axis], hidden[:, axis]))
