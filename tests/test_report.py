"""The Snakemake report of the tiny end-to-end run: every item in it, and its figures shown in Chromium.

Snakemake's report is a single-page app: the results are embedded as data URIs in a script and
React draws the page. What proves that a figure renders is a browser that clicks through the
menu as a person would and finds each figure's <img> decoded at the PNG's own size, so the test
drives headless Chromium through the DevTools protocol (tests/cdp.py, standard library only).
"""

import base64
import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from cdp import Browser, find_chromium
from conftest import REPO, nsdflow_env, run_snakemake
from PIL import Image

from nsdflow.report.html import scores_html
from nsdflow.report.provenance import git_state, weights_text

CATEGORIES = ["1. Provenance", "2. Features", "3. Scores", "4. Figures", "5. Submission"]


# ----------------------------------------------------------------------------- the pages, without a run


def test_weights_identity_in_words():
    assert weights_text({"init": "random", "seed": 3}) == "random initialisation (seed 3): not trained"
    assert weights_text({"init": "checkpoint", "path": "/w/a.pth", "sha256": "ab12"}) == \
        "checkpoint /w/a.pth, sha256 ab12"
    assert weights_text({"init": "pretrained", "tag": "openai"}) == "pretrained tag openai"


def test_git_state_outside_a_checkout(tmp_path):
    assert git_state(tmp_path)["commit"] is None
    assert git_state(REPO).get("commit") is None or len(git_state(REPO)["commit"]) == 40


def test_provenance_cli(tmp_path):
    manifest = {"spec": {"kind": "alexnet", "model": None, "weights": {"init": "random", "seed": 0},
                         "layers": {"features.5": {"pool": "avg2"}}, "input_size": 224, "dtype": "float16"},
                "layers": {"features.5": {"shape": [10, 768], "dtype": "float16"}}, "device": "cpu", "n_images": 10}
    (tmp_path / "alex.json").write_text(json.dumps(manifest))
    config = {"data": {"root": "demo"}, "models": {"m": {"readout": "ridge", "features": ["alex/features.5"]}}}
    out = {k: tmp_path / f"{k}.{ext}" for k, ext in (("json", "json"), ("html", "html"), ("features", "html"))}
    proc = subprocess.run([sys.executable, "-m", "nsdflow.cli", "provenance", "--config", json.dumps(config),
                           "--manifests", f"alex={tmp_path / 'alex.json'}", "--workflow-dir", str(REPO),
                           "--out", str(out["json"]), "--html", str(out["html"]),
                           "--features-html", str(out["features"])], capture_output=True, text=True,
                          env=nsdflow_env())
    assert proc.returncode == 0, proc.stderr
    prov = json.loads(out["json"].read_text())
    assert prov["config"] == config and prov["packages"]["numpy"] and prov["nsdflow_version"]
    assert prov["backbones"][0]["layers"] == "features.5 avg2 768"
    assert "readout: ridge" in out["html"].read_text()
    assert "random initialisation (seed 0): not trained" in out["features"].read_text()


def test_scores_page_without_noise_ceilings():
    from nsdflow.evaluate.summary import summarize

    rng = np.random.default_rng(0)
    vertices = pd.DataFrame({"model": "m", "subject": "subj01", "hemi": np.repeat(["lh", "rh"], 20),
                             "prf-visualrois": "V1v", "r_val": rng.uniform(-0.1, 0.6, 40)})
    page = scores_html(summarize(vertices))
    assert "No noise ceilings are known for this run" in page and "mean Pearson r" in page
    assert "V1d" in page and "&mdash;" in page  # an ROI absent everywhere: no value


# ----------------------------------------------------------------------------- the tiny run's report


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory):
    workdir, _ = tiny_run
    out = tmp_path_factory.mktemp("report") / "report.html"
    run_snakemake(workdir, "--report", str(out))
    return workdir, out


def _embedded(html_text, name):
    """A ``var name = {...};`` JSON object the report embeds in a script."""
    m = re.search(rf"var {name} = (\{{.*?\}});\s*</script>", html_text, re.S)
    assert m, f"no {name} in the report"
    return json.loads(m.group(1))


def _decode(data_uri):
    return base64.b64decode(data_uri.split("base64,", 1)[1])


@pytest.mark.e2e
def test_report_holds_tables_figures_config_and_provenance(report):
    workdir, out = report
    text = out.read_text()
    results = _embedded(text, "results")
    categories = _embedded(text, "categories")
    assert sorted(categories) == CATEGORIES
    names = sorted(r["name"] for r in results.values())
    figures = {p for p in results if p.endswith(".png")}
    assert {p for p in figures if "brain_maps" in p} == {f"results/plots/brain_maps/{m}/{s}.png"
                                                        for m in ("alex_ridge", "clip_ridge")
                                                        for s in ("subj01", "subj02")}
    assert len([p for p in figures if "roi_median_r" in p]) == 4 and "results/plots/model_comparison.png" in figures
    for name in ("scores.html", "leaderboard.csv", "by_subject_hemi.csv", "by_roi.csv", "summary.csv",
                 "provenance.html", "features.html", "submission.zip", "check.txt"):
        assert name in names, name
    for path, entry in results.items():
        assert entry["caption"].strip(), f"{path} has no caption"
        assert _decode(entry["data_uri"]) == (workdir / path).read_bytes(), path
    scores = _decode(results["results/scores/scores.html"]["data_uri"]).decode()
    assert "Leaderboard: every vertex of every subject and hemisphere" in scores and "alex_ridge" in scores
    assert "Per ROI, pooled over subjects and hemispheres" in scores
    provenance = _decode(results["results/report/provenance.html"]["data_uri"]).decode()
    for expected in ("git commit", "snakemake", "torch", "clip_ridge:", "val_fraction: 0.25"):
        assert expected in provenance, expected  # the config is there, defaults filled in
    features = _decode(results["results/report/features.html"]["data_uri"]).decode()
    assert "random initialisation (seed 0): not trained" in features and "ViT-B-32" in features
    check = _decode(results["results/submission/check.txt"]["data_uri"]).decode()
    assert "submission OK" in check
    # The demo's brain-map caption says every vertex is drawn; the figure says it too.
    caption = results["results/plots/brain_maps/alex_ridge/subj01.png"]["caption"]
    assert "every challenge vertex lies on fsaverage5" in caption


@pytest.mark.e2e
@pytest.mark.skipif(find_chromium() is None,
                    reason="chromium is not installed (Debian package 'chromium', see .ci/apt-packages.txt)")
def test_report_shows_every_figure_in_chromium(report):
    """Click through the report's menu to every figure; each must decode at the PNG's own size."""
    workdir, out = report
    results = _embedded(out.read_text(), "results")
    by_uri = {entry["data_uri"]: path for path, entry in results.items()}
    pngs = {p for p in results if p.endswith(".png")}
    shown = {}
    with Browser() as browser:
        page = browser.open(out.resolve().as_uri())
        browser.wait_for(page, "typeof app !== 'undefined' && document.querySelectorAll('#app a').length > 0")
        links = browser.evaluate(page, "[...document.querySelectorAll('#app a')].map(a => a.textContent.trim())")
        for category in CATEGORIES:
            assert category in links, f"{category} not in the menu: {links}"

        def click_text(text):
            """Click the link whose text is ``text``, as a person would."""
            clicked = browser.evaluate(page, f"""(() => {{
                const a = [...document.querySelectorAll('#app a')].find(a => a.textContent.trim() === {json.dumps(text)});
                if (a) a.click();
                return !!a; }})()""")
            assert clicked, f"no link {text!r}"

        def show_rows():
            """Click each row's eye button; record the figure the content pane then shows."""
            rows = browser.wait_for(page, "document.querySelectorAll('#app tbody tr').length")
            for i in range(rows):
                browser.evaluate(page, f"document.querySelectorAll('#app tbody tr')[{i}]"
                                       ".querySelector('td:last-child a').click()")
                img = browser.wait_for(page, """(() => {
                    const img = document.querySelector('#app img[src^="data:image/png"]');
                    return img && img.complete && img.naturalWidth > 0
                        ? [img.getAttribute('src'), img.naturalWidth, img.naturalHeight] : null; })()""")
                shown[by_uri[img[0]]] = (img[1], img[2])

        click_text("4. Figures")
        subcategories = browser.wait_for(page, """(() => {
            const names = [...document.querySelectorAll('#app a')].map(a => a.textContent.trim());
            const subs = names.filter(n => ['brain maps', 'median r per ROI', 'model comparison'].includes(n));
            return subs.length === 3 ? subs : null; })()""")
        for sub in subcategories:
            browser.evaluate(page, "app.showCategory('4. Figures')")  # what the menu's "4. Figures" does
            click_text(sub)
            show_rows()
            # A label with two values (a subject, a hemisphere) becomes a toggle: show each value's rows.
            values = browser.evaluate(page, "[...document.querySelectorAll('#app fieldset label')]"
                                            ".map(l => l.textContent.trim())")
            for value in values:
                browser.evaluate(page, f"[...document.querySelectorAll('#app fieldset label')]"
                                       f".find(l => l.textContent.trim() === {json.dumps(value)}).click()")
                show_rows()
        # Pages (scores, provenance) open in a frame of their own. Back to the main menu first, as a
        # person would (the report keeps a results list's rows when it goes straight to another).
        browser.evaluate(page, "app.setView({navbarMode: 'menu'})")
        click_text("3. Scores")
        browser.wait_for(page, """(() => {
            const row = [...document.querySelectorAll('#app tbody tr')].find(r => r.textContent.includes('aggregations'));
            if (row) row.querySelector('td:last-child a').click();
            return !!row; })()""")
        frame_src = browser.wait_for(page, "(document.querySelector('#app iframe') || {}).src")
        assert by_uri[frame_src] == "results/scores/scores.html"
        assert not browser.exceptions(), browser.exceptions()
    missing = pngs - set(shown)
    assert not missing, f"figures never shown: {sorted(missing)}"
    for path, size in shown.items():
        assert size == Image.open(workdir / path).size, path
