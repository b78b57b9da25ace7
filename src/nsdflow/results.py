"""The results layout: where every rule writes, as :mod:`nsdflow.data.layout` is for the data root.

Each rule's outputs are named templates here (``{wildcard}`` fields), and so are its log and
benchmark files; the rules (``workflow/rules/*.smk``), the DAG (:mod:`nsdflow.dag`) and the code
that reads results back all take their paths from this module, never from a literal.

=====================  =====================================================================
rule                   outputs
=====================  =====================================================================
demo                   the demo dataset's manifest (the dataset: ``results/demo/``)
validate_data          ``results/data/{subject}.json``: counts, NSD ids, ROIs present
index_images           ``results/images/index.csv``: every subject's images and NSD ids
cache_images           ``results/images/cache.json`` (the uint8 cache: ``cache.zarr``)
check_backbone         ``results/features/preflight/{backbone}.json``
extract                ``results/features/{backbone}.shards/{shard}-of-{nshards}.json``
combine_features       ``results/features/{backbone}.json`` (the store: ``{backbone}.zarr``)
split                  ``results/splits/{subject}.json``
regions                ``results/regions/{subject}_{hemi}.npz``
targets                ``results/targets/{subject}_{hemi}/{region}.npy``
pca                    ``results/pca/{featureset}/{subject}.npz`` (``all.npz``: shared by every subject)
design                 ``results/designs/{featureset}/{design}/{subject}.npz``
pretrain               ``results/pretrain/{model}/{run}.pt``: a network pretrained on every subject
fit                    ``results/readouts/{model}/{subject}/{hemi}/{region}.npz`` (``both/subject.npz``)
merge                  ``results/predictions/{model}/{subject}_{hemi}.npz``
ensemble               ``results/predictions/{ensemble}/...`` and ``results/ensembles/...``
selection              ``results/scores/selection.csv`` / ``.parquet``
score_vertices         ``results/scores/vertices/{model}/{subject}_{hemi}.parquet``
summarize              ``results/scores/{summary,leaderboard,by_subject_hemi,by_roi}.{csv,parquet}``
scores_page            ``results/scores/scores.html``
plot_*                 ``results/plots/...`` (PNG and SVG)
provenance             ``results/report/...``
submission             ``results/submission/submission.zip`` and ``check.txt``
=====================  =====================================================================
"""

from __future__ import annotations

import re

RESULTS = "results"
DEMO_ROOT = f"{RESULTS}/demo/algonauts"
DEMO_WITHHELD = f"{RESULTS}/demo/withheld"
IMAGE_STORE = f"{RESULTS}/images/cache.zarr"
FEATURE_STORE = RESULTS + "/features/{backbone}.zarr"
SCORES = f"{RESULTS}/scores"
#: The fit unit (``{region}`` of a fit's output) of a job that fits every region of a hemisphere, and
#: of one that fits both hemispheres of a subject (its ``{hemi}`` is ``both``).
HEMISPHERE_UNIT = "hemisphere"
SUBJECT_UNIT = "subject"
#: Checkpoints of trained readouts (resumable state, not results: deleted when a fit completes).
CHECKPOINTS = RESULTS + "/checkpoints/{model}/{subject}/{hemi}/{region}"
PRETRAIN_CHECKPOINT = RESULTS + "/checkpoints/{model}/pretrain/{run}.pt"

#: Every rule's outputs by name.
OUTPUTS: dict[str, dict[str, str]] = {
    "changes": {"changes": ".snakemake/nsdflow/changes.json"},
    "demo": {"manifest": f"{DEMO_WITHHELD}/demo_manifest.json"},
    "validate_data": {"summary": RESULTS + "/data/{subject}.json"},
    "index_images": {"index": f"{RESULTS}/images/index.csv"},
    "cache_images": {"manifest": f"{RESULTS}/images/cache.json"},
    "check_backbone": {"report": RESULTS + "/features/preflight/{backbone}.json"},
    "extract": {"manifest": RESULTS + "/features/{backbone}.shards/{shard}-of-{nshards}.json"},
    "combine_features": {"manifest": RESULTS + "/features/{backbone}.json"},
    "split": {"split": RESULTS + "/splits/{subject}.json"},
    "regions": {"regions": RESULTS + "/regions/{subject}_{hemi}.npz"},
    "targets": {"targets": RESULTS + "/targets/{subject}_{hemi}/{region}.npy"},
    "pca": {"pca": RESULTS + "/pca/{featureset}/{subject}.npz"},  # {subject} "all": one PCA for every subject
    "design": {"design": RESULTS + "/designs/{featureset}/{design}/{subject}.npz"},
    "pretrain": {"state": RESULTS + "/pretrain/{model}/{run}.pt"},
    "fit": {"fit": RESULTS + "/readouts/{model}/{subject}/{hemi}/{region}.npz"},
    "merge": {"pred": RESULTS + "/predictions/{model}/{subject}_{hemi}.npz"},
    "ensemble": {"pred": RESULTS + "/predictions/{ensemble}/{subject}_{hemi}.npz",
                 "selection": RESULTS + "/ensembles/{ensemble}/{subject}_{hemi}.json"},
    "selection": {"csv": f"{SCORES}/selection.csv", "parquet": f"{SCORES}/selection.parquet"},
    "score_vertices": {"vertices": SCORES + "/vertices/{model}/{subject}_{hemi}.parquet"},
    "summarize": {
        **{f"{t}_{ext}": f"{SCORES}/{t}.{ext}" for t in ("summary", "leaderboard", "by_subject_hemi", "by_roi")
           for ext in ("csv", "parquet")},
        "scores": f"{SCORES}/scores.json",
    },
    "scores_page": {"html": f"{SCORES}/scores.html"},
    "plot_roi_bars": {"png": RESULTS + "/plots/roi_median_r/{subject}_{hemi}.png",
                      "svg": RESULTS + "/plots/roi_median_r/{subject}_{hemi}.svg"},
    "plot_models": {"png": f"{RESULTS}/plots/model_comparison.png", "svg": f"{RESULTS}/plots/model_comparison.svg"},
    "plot_brain_map": {"png": RESULTS + "/plots/brain_maps/{model}/{subject}.png",
                       "svg": RESULTS + "/plots/brain_maps/{model}/{subject}.svg"},
    "plot_attention": {"png": RESULTS + "/plots/attention/{model}/{subject}.png",
                       "svg": RESULTS + "/plots/attention/{model}/{subject}.svg",
                       "csv": RESULTS + "/plots/attention/{model}/{subject}.csv"},
    "provenance": {"json": f"{RESULTS}/report/provenance.json", "html": f"{RESULTS}/report/provenance.html",
                   "features": f"{RESULTS}/report/features.html"},
    "submission": {"zip": f"{RESULTS}/submission/submission.zip", "check": f"{RESULTS}/submission/check.txt"},
}

#: Output fields that a rule fills itself (one file per region), not wildcards of its jobs.
EXPANDED = {"targets": ("region",)}

_FIELD = re.compile(r"{(\w+)}")


def output(rule: str, name: str | None = None, **wildcards) -> str:
    """The path of a rule's output ``name`` (its only output when None), wildcards filled in
    (those not given stay as ``{field}``, for Snakemake)."""
    outputs = OUTPUTS[rule]
    if name is None:
        if len(outputs) != 1:
            raise ValueError(f"rule {rule} has outputs {', '.join(outputs)}: name one")
        name = next(iter(outputs))
    return fill(outputs[name], **wildcards)


def fill(template: str, **wildcards) -> str:
    """``template`` with the given wildcards filled in; others left as ``{field}``."""
    return _FIELD.sub(lambda m: str(wildcards[m.group(1)]) if m.group(1) in wildcards else m.group(0), template)


def wildcards_of(rule: str) -> list[str]:
    """The wildcards of a rule's outputs, in their order of appearance."""
    names: list[str] = []
    for template in OUTPUTS[rule].values():
        for field in _FIELD.findall(template):
            if field not in names and field not in EXPANDED.get(rule, ()):
                names.append(field)
    return names


def log(rule: str) -> str:
    """``logs/<rule>/<wildcard>/.../<last wildcard>.log`` (``logs/<rule>.log`` without wildcards)."""
    fields = wildcards_of(rule)
    return f"logs/{rule}/" + "/".join("{" + f + "}" for f in fields) + ".log" if fields else f"logs/{rule}.log"


def benchmark(rule: str) -> str:
    """Where Snakemake records a job's time and memory, like :func:`log`."""
    fields = wildcards_of(rule)
    return f"benchmarks/{rule}/" + "/".join("{" + f + "}" for f in fields) + ".tsv" if fields else f"benchmarks/{rule}.tsv"


def feature_store(backbone: str) -> str:
    return fill(FEATURE_STORE, backbone=backbone)
