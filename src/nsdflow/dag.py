"""The DAG: what each rule reads, and the key that decides whether a job reruns.

A job reruns when its key changes, and only then (or when its output is missing). The key of a
job is a hash of

* the code its command runs (:func:`nsdflow.codeversion.code_digest`),
* the config it runs with (its ``spec``),
* the content of the raw data it reads: per subject and hemisphere and per file role (the
  images' names; their pixels; one hemisphere's fMRI; its ROI masks and mappings; its surface
  masks; its withheld test data and noise ceilings; a backbone's checkpoint), as digests of the
  files (:mod:`nsdflow.digests`), never their times,
* and the keys of the results it reads (its ``inputs``).

A result that a job only needs to exist, and whose content reaches the job through the data
roles it declares, is a *gate*, not an input: every subject's validation summary gates what
follows it, so that new values in one hemisphere's fMRI rerun that hemisphere's fits and
scores, not the image cache or another subject's designs. A feature store is shared by every
subject; a design reads only its subject's rows of it, so its key holds the store's key for
that subject (:meth:`Dag.feature_key`: the backbone, its weights and the pixels of that subject's
images), and a changed image reruns the designs of the subjects who saw it.

The rules (``workflow/rules/*.smk``) take their inputs from :meth:`Dag.input_paths` (all marked
``ancient``: Snakemake orders jobs by them but never compares file times) and carry
:meth:`Dag.key` among their params, so Snakemake's own params trigger does the rest. Each
``_<rule>`` method below is one rule's row of the DAG.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from . import results
from .codeversion import code_digest
from .data.layout import HEMISPHERES, ROI_CLASSES, SPLITS, SubjectPaths, WithheldPaths
from .digests import DigestCache, combine
from .plan import Plan


@dataclass(frozen=True)
class Ref:
    """One output of one job: ``rule``'s output ``output`` with wildcards ``wildcards``."""

    rule: str
    output: str | None
    wildcards: tuple[tuple[str, str], ...]

    @property
    def path(self) -> str:
        return results.output(self.rule, self.output, **dict(self.wildcards))

    @property
    def job(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """The job that writes it (a rule's expanded fields, e.g. a target's region, dropped)."""
        names = results.wildcards_of(self.rule)
        return self.rule, tuple((k, v) for k, v in self.wildcards if k in names)


def ref(rule: str, output: str | None = None, **wildcards) -> Ref:
    return Ref(rule, output, tuple(sorted((k, str(v)) for k, v in wildcards.items())))


@dataclass
class Step:
    """One job's row of the DAG (see the module docstring)."""

    spec: Any = None
    inputs: dict[str, Ref | list[Ref]] = field(default_factory=dict)
    gates: dict[str, Ref | list[Ref]] = field(default_factory=dict)
    data: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    extra_code: tuple[str, ...] = ()


def _refs(value: Ref | list[Ref]) -> list[Ref]:
    return value if isinstance(value, list) else [value]


class Dag:
    """The DAG of a :class:`~nsdflow.plan.Plan`: inputs, data and keys of every rule's jobs."""

    def __init__(self, plan: Plan, digests: DigestCache | None = None):
        self.plan = plan
        self.config = plan.config
        self.digests = digests if digests is not None else DigestCache(None)
        self._keys: dict[tuple, str] = {}
        self._listings: dict[str, dict[str, list[str]]] = {}
        self._data: dict[tuple, str] = {}
        self._feature_keys: dict[tuple[str, str], str] = {}
        self._prefetched = False

    # ------------------------------------------------------------------ the interface of the rules

    def step(self, rule: str, **wildcards) -> Step:
        return getattr(self, f"_{rule}")(**wildcards)

    def key(self, rule: str, **wildcards) -> str:
        """The job's rerun key (see the module docstring)."""
        wc = tuple(sorted((k, str(v)) for k, v in wildcards.items() if k in results.wildcards_of(rule)))
        memo = (rule, wc)
        if memo not in self._keys:
            step = self.step(rule, **dict(wc))
            inputs = {name: [self.key(r.job[0], **dict(r.job[1])) for r in _refs(v)] for name, v in step.inputs.items()}
            command = rule.replace("_", "-")
            self._keys[memo] = combine(rule, code_digest(command, step.extra_code), step.spec, step.data, step.keys,
                                       inputs)
        return self._keys[memo]

    def targets(self) -> list[Ref]:
        """What a run makes (the inputs of rule ``all``): tables, page, figures, submission, provenance."""
        plan, out = self.plan, []
        out += [ref("summarize", "summary_csv"), ref("summarize", "leaderboard_csv"), ref("scores_page"),
                ref("plot_models", "png"), ref("submission", "zip"), ref("submission", "check"),
                ref("provenance", "html")]
        out += [ref("plot_roi_bars", "png", subject=s, hemi=h) for s in plan.subjects for h in HEMISPHERES]
        out += [ref("plot_brain_map", "png", model=m, subject=s) for m in plan.brain_map_models for s in plan.subjects]
        out += [ref("plot_attention", "png", model=m, subject=s) for m in plan.attention_models for s in plan.subjects]
        if plan.ensembles:
            out.append(ref("selection", "csv"))
        return out

    def jobs(self) -> dict[tuple, Step]:
        """Every job the targets need, by ``(rule, wildcards)``, found by walking the steps' inputs."""
        found: dict[tuple, Step] = {}
        todo = [r.job for r in self.targets()]
        while todo:
            job = todo.pop()
            if job in found:
                continue
            step = found[job] = self.step(job[0], **dict(job[1]))
            for value in (*step.inputs.values(), *step.gates.values()):
                todo += [r.job for r in _refs(value) if r.job not in found]
        return found

    def to_run(self, recorded, incomplete=lambda paths: set()) -> dict[tuple, str]:
        """The jobs Snakemake must run, and why: ``missing`` (an output is missing, or was left
        incomplete by a killed job) or ``key`` (it was made under another key: its code, config or
        data changed).

        ``recorded(path)``: the params Snakemake recorded for an output (None without a record: an
        output marked done by ``snakemake --touch``, which Snakemake does not rerun either);
        ``incomplete(paths)``: those of ``paths`` marked incomplete.
        """
        jobs = sorted(self.jobs())
        paths = {job: self.output_of(job[0], **dict(job[1])) for job in jobs}
        unfinished = incomplete(list(paths.values()))
        out = {}
        for job in jobs:
            rule, wc = job
            path = paths[job]
            if not os.path.exists(path) or path in unfinished:
                out[job] = "missing"
                continue
            params = recorded(path)
            if params is not None and not any(self.key(rule, **dict(wc)) in str(p) for p in params):
                out[job] = "key"
        return out

    def output_of(self, rule: str, **wildcards) -> str:
        """One output of a job (the first; for ``targets``, its first region's file)."""
        if rule == "targets":
            wildcards = {**wildcards, "region": self.plan.regions[0]}
        return results.output(rule, next(iter(results.OUTPUTS[rule])), **wildcards)

    def input_paths(self, rule: str, **wildcards) -> dict[str, str | list[str]]:
        """The job's inputs and gates as Snakemake input paths, by name."""
        step = self.step(rule, **wildcards)
        out: dict[str, str | list[str]] = {}
        for name, value in {**step.inputs, **step.gates}.items():
            out[name] = [r.path for r in value] if isinstance(value, list) else value.path
        return out

    # ------------------------------------------------------------------ the raw data

    def data(self, role: str, subject: str | None = None, hemi: str | None = None) -> str:
        """The digest of one role of the raw data (see the module docstring). On the demo, every
        role is the demo's key: the demo's data is a function of its config and code."""
        if self.plan.demo and role not in ("weights", "hdf5"):
            return self.key("demo")
        memo = (role, subject, hemi)
        if memo not in self._data:  # a subject's pixels are 10,000 files, asked for by every job reading them
            if role == "images":
                self._data[memo] = combine(self._listing(subject))
            else:
                files = self._files(role, subject, hemi)
                self._prefetch()
                self._data[memo] = combine([(os.path.basename(f), self.digests.digest(f)) for f in files])
        return self._data[memo]

    def _listing(self, subject: str) -> dict[str, list[str]]:
        """The image file names of a subject, per split (the images' identity and order)."""
        if subject not in self._listings:
            paths = SubjectPaths(self.plan.data_root, subject)
            listing = {}
            for split in SPLITS:
                folder = paths.images_dir(split)
                try:
                    with os.scandir(folder) as entries:
                        listing[split] = sorted(e.name for e in entries if not e.name.startswith("."))
                except OSError:
                    listing[split] = []
            self._listings[subject] = listing
        return self._listings[subject]

    def _files(self, role: str, subject: str | None, hemi: str | None) -> list[str]:
        if role == "weights":
            path = self.plan.weights_file(subject)  # subject: the backbone's name
            return [path] if path else []
        if role == "hdf5":
            images = self.config.get("images") or {}
            return [os.path.expanduser(images["hdf5"])] if images.get("source") == "hdf5" else []
        p = SubjectPaths(self.plan.data_root, subject)
        if role == "pixels":
            listing = self._listing(subject)
            return [os.path.join(folder, name) for split in SPLITS
                    for folder in [str(p.images_dir(split))] for name in listing[split]]
        if role == "fmri":
            return [str(p.fmri(hemi))]
        if role == "rois":
            return [str(p.roi_mask(hemi, c, "challenge")) for c in ROI_CLASSES] + [str(p.mapping(c)) for c in ROI_CLASSES]
        if role == "surface":
            return [str(p.fsaverage_vertices(hemi))] + [str(p.roi_mask(hemi, c, "fsaverage")) for c in ROI_CLASSES]
        if role == "withheld":
            if not self.plan.withheld:
                return []
            w = WithheldPaths(self.plan.withheld, subject)
            return [str(w.noise_ceiling(hemi)), str(w.test_fmri(hemi))]
        raise ValueError(f"unknown data role {role!r}")

    def _prefetch(self) -> None:
        """Hash every data file of the run once, on all cores (hashlib releases the GIL), so that a
        first DAG over the real data takes a few passes over the disk, not one file at a time."""
        if self._prefetched or self.plan.demo:
            return
        self._prefetched = True
        files = [f for s in self.plan.subjects for h in HEMISPHERES
                 for role in ("fmri", "rois", "surface", "withheld") for f in self._files(role, s, h)]
        files += [f for s in self.plan.subjects for f in self._files("pixels", s, None)]
        files += [f for b in self.plan.backbones for f in self._files("weights", b, None)]
        files += self._files("hdf5", None, None)
        stale = [f for f in dict.fromkeys(files) if not self.digests.fresh(f)]  # a thread per file costs too
        if stale:
            with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
                list(pool.map(self.digests.digest, stale))
            self.digests.save()

    def subject_data(self, subject: str) -> list[str]:
        """Every role of a subject's data (what its validation reads)."""
        out = [self.data("images", subject)]
        if self.config["data"].get("check_images", True):
            out.append(self.data("pixels", subject))
        for h in HEMISPHERES:
            out += [self.data(role, subject, h) for role in ("fmri", "rois", "surface")]
        return out

    def feature_key(self, backbone: str, subject: str) -> str:
        """What a backbone's features of one subject's images depend on: the backbone (config,
        weights), the image cache's settings, the code of the image and feature stages, and the
        pixels of that subject's images, not of other subjects'."""
        memo = (backbone, subject)
        if memo not in self._feature_keys:
            self._feature_keys[memo] = combine(
                "features", self._backbone_spec(backbone), self.data("weights", backbone), self._image_spec(),
                self.data("hdf5"), self.data("pixels", subject),
                [code_digest(c) for c in ("index-images", "cache-images", "extract", "combine-features")])
        return self._feature_keys[memo]

    def _backbone_spec(self, backbone: str) -> dict:
        ex = self.config.get("extraction") or {}
        return {"backbone": backbone, **self.plan.backbones[backbone], "device": ex.get("device", "auto")}

    def _image_spec(self) -> dict:
        images = dict(self.config.get("images") or {})
        images.pop("workers", None)  # how many processes decode does not change a pixel
        return images

    def _summary(self, subject: str) -> Ref:
        return ref("validate_data", subject=subject)

    def _features(self, featureset: str) -> list[Ref]:
        return [ref("combine_features", backbone=b) for b in self.plan.featureset_backbones(featureset)]

    def _prediction(self, model: str, subject: str, hemi: str) -> Ref:
        if model in self.plan.ensembles:
            return ref("ensemble", "pred", ensemble=model, subject=subject, hemi=hemi)
        return ref("merge", model=model, subject=subject, hemi=hemi)

    # ------------------------------------------------------------------ data

    def _demo(self) -> Step:
        return Step(spec=self.config.get("demo"))

    def _validate_data(self, subject: str) -> Step:
        d = self.config["data"]
        return Step(spec=[self.plan.data_root, self.plan.roi_classes, d.get("check_finite"), d.get("check_images")],
                    gates=self._demo_gate(), data=self.subject_data(subject))

    def _demo_gate(self) -> dict[str, Ref]:
        return {"demo": ref("demo")} if self.plan.demo else {}

    # ------------------------------------------------------------------ features

    def _index_images(self) -> Step:
        return Step(spec=[self.plan.data_root, self.plan.subjects],
                    gates={"summaries": [self._summary(s) for s in self.plan.subjects]},
                    data=[self.data("images", s) for s in self.plan.subjects])

    def _cache_images(self) -> Step:
        return Step(spec=self._image_spec(), inputs={"index": ref("index_images")},
                    data=[self.data("pixels", s) for s in self.plan.subjects] + [self.data("hdf5")])

    def _check_backbone(self, backbone: str) -> Step:
        return Step(spec=self._backbone_spec(backbone), data=[self.data("weights", backbone)])

    def _extract(self, backbone: str, shard: str, nshards: str) -> Step:
        return Step(spec=self._backbone_spec(backbone), inputs={"images": ref("cache_images")},
                    gates={"preflight": ref("check_backbone", backbone=backbone)},
                    data=[self.data("weights", backbone)])

    def _combine_features(self, backbone: str) -> Step:
        # The shards are gates: how many jobs extracted a store does not change its features.
        shards = [ref("extract", backbone=backbone, shard=k, nshards=self.plan.shards) for k in range(self.plan.shards)]
        return Step(spec=self._backbone_spec(backbone), inputs={"images": ref("cache_images")},
                    gates={"shards": shards}, data=[self.data("weights", backbone)],
                    keys=[code_digest("extract")])

    # ------------------------------------------------------------------ readouts

    def _split(self, subject: str) -> Step:
        s = self.config["split"]
        return Step(spec=[s["val_fraction"], s["seed"]], gates={"summary": self._summary(subject)},
                    data=[self.data("images", subject)])

    def _regions(self, subject: str, hemi: str) -> Step:
        return Step(spec=[self.plan.data_root, self.plan.roi_classes], gates={"summary": self._summary(subject)},
                    data=[self.data("rois", subject, hemi)])

    def _targets(self, subject: str, hemi: str) -> Step:
        return Step(spec=[self.plan.data_root, self.plan.regions],
                    inputs={"regions": ref("regions", subject=subject, hemi=hemi)},
                    gates={"summary": self._summary(subject)}, data=[self.data("fmri", subject, hemi)])

    def _pca(self, featureset: str, subject: str) -> Step:
        subjects = self.plan.subjects if subject == "all" else [subject]  # all: one PCA for every subject
        return Step(spec=self.plan.feature_sets[featureset],
                    inputs={"split": [ref("split", subject=s) for s in subjects]},
                    gates={"features": self._features(featureset), "summary": [self._summary(s) for s in subjects]},
                    data=[self.data("images", s) for s in subjects],
                    keys=[self.feature_key(b, s) for b in self.plan.featureset_backbones(featureset) for s in subjects])

    def _shared_pca(self, featureset: str) -> bool:
        return (self.plan.feature_sets[featureset].get("pca") or {}).get("scope") == "all"

    def _design(self, featureset: str, design: str, subject: str) -> Step:
        inputs: dict[str, Ref | list[Ref]] = {"split": ref("split", subject=subject)}
        gates: dict[str, Ref | list[Ref]] = {"summary": self._summary(subject)}
        keys = []
        if self.plan.featureset_has_pca(featureset):
            inputs["pca"] = ref("pca", featureset=featureset, subject="all" if self._shared_pca(featureset) else subject)
        if not self.plan.featureset_has_pca(featureset) or self._shared_pca(featureset):  # reads the stores
            gates["features"] = self._features(featureset)
            keys = [self.feature_key(b, subject) for b in self.plan.featureset_backbones(featureset)]
        return Step(spec=[self.plan.feature_sets[featureset], self.plan.designs[(featureset, design)],
                          self.plan.readout_settings["backend"]],
                    inputs=inputs, gates=gates, data=[self.data("images", subject)], keys=keys)

    def _fit(self, model: str, subject: str, hemi: str, region: str) -> Step:
        mp = self.plan.model_plans[model]
        hemis = list(HEMISPHERES) if hemi == "both" else [hemi]
        inputs: dict[str, Ref | list[Ref]] = {
            "regions": [ref("regions", subject=subject, hemi=h) for h in hemis],
            "split": ref("split", subject=subject),
        }
        gates: dict[str, Ref | list[Ref]] = {"summary": self._summary(subject)}
        keys, data = [], []
        if mp["design"] is not None:
            inputs["design"] = ref("design", featureset=mp["featureset"], design=mp["design"], subject=subject)
        else:  # the readout reads feature maps from the stores
            gates["features"] = [ref("combine_features", backbone=b) for b in self.plan.model_backbones(model)]
            keys = [self.feature_key(b, subject) for b in self.plan.model_backbones(model)]
        if mp["pretrain"]:
            inputs["pretrained"] = [ref("pretrain", model=model, run=run) for run in self.plan.runs(model)]
        if mp["fit_jobs"] == "region":
            inputs["targets"] = ref("targets", subject=subject, hemi=hemi, region=region)
        else:
            data = [self.data("fmri", subject, h) for h in hemis]
        return Step(spec=[self.plan.fit_spec(model), self.plan.fit_backend(model)], inputs=inputs, gates=gates,
                    data=data, keys=keys, extra_code=(mp["class"].partition(":")[0],))

    def _pretrain(self, model: str, run: str) -> Step:
        mp, subjects = self.plan.model_plans[model], self.plan.subjects
        return Step(spec=[self.plan.fit_spec(model), run, self.plan.fit_backend(model)],
                    inputs={"designs": [ref("design", featureset=mp["featureset"], design=mp["design"], subject=s)
                                        for s in subjects],
                            "splits": [ref("split", subject=s) for s in subjects]},
                    gates={"summaries": [self._summary(s) for s in subjects]},
                    data=[self.data("fmri", s, h) for s in subjects for h in HEMISPHERES],
                    extra_code=(mp["class"].partition(":")[0],))

    def _merge(self, model: str, subject: str, hemi: str) -> Step:
        fitted = self.plan.fit_model(model)  # a model fitted exactly as another reads that one's fits
        fits = [ref("fit", model=fitted, subject=subject, hemi=h, region=u) for h, u in self.plan.fit_units(model, hemi)]
        return Step(inputs={"fits": fits}, gates={"summary": self._summary(subject)})

    def _ensemble(self, ensemble: str, subject: str, hemi: str) -> Step:
        e = self.plan.ensembles[ensemble]
        return Step(spec=[e, self.plan.data_root],
                    inputs={"preds": [self._prediction(m, subject, hemi) for m in e["models"]],
                            "regions": ref("regions", subject=subject, hemi=hemi),
                            "split": ref("split", subject=subject)},
                    data=[self.data("fmri", subject, hemi)])

    def _selection(self) -> Step:
        return Step(inputs={"selections": [ref("ensemble", "selection", ensemble=e, subject=s, hemi=h)
                                           for e in self.plan.ensembles for s in self.plan.subjects
                                           for h in HEMISPHERES]})

    # ------------------------------------------------------------------ evaluate

    def _score_vertices(self, model: str, subject: str, hemi: str) -> Step:
        return Step(spec=[self.plan.data_root, self.plan.withheld],
                    inputs={"pred": self._prediction(model, subject, hemi),
                            "regions": ref("regions", subject=subject, hemi=hemi),
                            "split": ref("split", subject=subject)},
                    data=[self.data("fmri", subject, hemi), self.data("withheld", subject, hemi)])

    def _summarize(self) -> Step:
        return Step(spec=self.plan.roi_classes,
                    inputs={"vertices": [ref("score_vertices", model=m, subject=s, hemi=h)
                                         for m in self.plan.scored_models for s in self.plan.subjects
                                         for h in HEMISPHERES]})

    # ------------------------------------------------------------------ report

    def _scores_page(self) -> Step:
        return Step(inputs={t: ref("summarize", f"{t}_parquet") for t in ("leaderboard", "by_subject_hemi", "by_roi")})

    def _plot_roi_bars(self, subject: str, hemi: str) -> Step:
        return Step(spec=self.config["plots"]["split"], inputs={"summary": ref("summarize", "summary_parquet")})

    def _plot_models(self) -> Step:
        return Step(spec=self.config["plots"]["split"], inputs={"summary": ref("summarize", "summary_parquet")})

    def _plot_brain_map(self, model: str, subject: str) -> Step:
        return Step(spec=[self.config["plots"], self.plan.data_root],
                    inputs={"lh": ref("score_vertices", model=model, subject=subject, hemi="lh"),
                            "rh": ref("score_vertices", model=model, subject=subject, hemi="rh"),
                            "scores": ref("summarize", "scores")},
                    gates={"summary": self._summary(subject)},
                    data=[self.data("surface", subject, h) for h in HEMISPHERES])

    def _plot_attention(self, model: str, subject: str) -> Step:
        fitted = self.plan.fit_model(model)
        units = dict.fromkeys(u for h in HEMISPHERES for u in self.plan.fit_units(model, h))
        return Step(spec=self.plan.data_root,
                    inputs={"fits": [ref("fit", model=fitted, subject=subject, hemi=h, region=u) for h, u in units]},
                    data=[self.data("images", subject)])

    def _provenance(self) -> Step:
        from .report.provenance import provenance_stamp

        workflow_dir = os.environ.get("NSDFLOW_WORKFLOW_DIR")
        return Step(spec=[self.config, provenance_stamp(workflow_dir)],
                    inputs={"manifests": [ref("combine_features", backbone=b) for b in self.plan.backbones]})

    # ------------------------------------------------------------------ submission

    def _submission(self) -> Step:
        m = self.plan.submission_model
        return Step(spec=[m, self.plan.data_root],
                    inputs={"preds": [self._prediction(m, s, h) for s in self.plan.subjects for h in HEMISPHERES]},
                    data=[self.data("images", s) for s in self.plan.subjects]
                    + [self.data("fmri", s, h) for s in self.plan.subjects for h in HEMISPHERES])


def job_rules() -> list[str]:
    """Every rule the DAG describes (each ``Dag._<rule>`` method)."""
    return sorted(name[1:] for name in vars(Dag) if name.startswith("_") and not name.startswith("__")
                  and name[1:] in results.OUTPUTS)

