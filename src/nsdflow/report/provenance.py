"""The run's provenance for the report: config, backbones and the identity of their weights (from
the feature manifests), package versions, the nsdflow version and the git commit.
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

from .html import html_page, html_table

# numpy and pandas are imported where they are used: the Snakefile imports this module to stamp
# the provenance rule, and building the DAG should not wait for pandas.

#: Distributions whose versions the provenance records (those absent are listed as such).
PACKAGES = (
    "nsdflow", "snakemake", "numpy", "scipy", "pandas", "pyarrow", "zarr", "dask", "torch", "torchvision",
    "open_clip_torch", "segment-anything", "timm", "scikit-learn", "himalaya", "nilearn", "nibabel", "matplotlib",
    "pillow",
)

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
    from .. import __version__

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
