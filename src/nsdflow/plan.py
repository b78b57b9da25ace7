"""The plan: what the Snakefile needs to know before any job runs, resolved from the validated config.

Kept out of the ``.smk`` files so that it is importable and unit-tested: the subjects and
regions, each model's readout, feature set, design and fit jobs, the ensembles, and the
cross-checks between sections of the config (a model naming a layer its backbone does not
store, say), each raised as a :class:`ConfigError` naming the key. :mod:`nsdflow.dag` builds each
rule's inputs and its rerun key from this plan.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from . import results
from .config import ConfigError
from .data.layout import ROI_CLASSES, subject_name
from .data.read import DataError, list_subjects
from .readouts.regions import region_names
from .results import HEMISPHERE_UNIT, SUBJECT_UNIT

__all__ = ["ConfigError", "Plan", "canonical", "make_plan"]


def canonical(obj: Any) -> str:
    """Stable JSON for a spec: the same config gives the same string, so params compare equal."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


@dataclass
class Plan:
    data_root: str
    withheld: str | None
    demo: bool
    subjects: list[str]
    regions: list[str]
    roi_classes: list[str]
    backbones: dict[str, dict]  # only those some model uses
    models: dict[str, dict]
    submission_model: str
    warnings: list[str] = field(default_factory=list)
    #: Feature sets by id (canonical specs, see nsdflow.readouts.featuresets), shared across models.
    feature_sets: dict[str, dict] = field(default_factory=dict)
    #: Designs by (feature set id, design name): {"kind": ..., "params": ...}.
    designs: dict[tuple[str, str], dict] = field(default_factory=dict)
    #: Per model: its readout, normalised params, feature set id, design name and fit units.
    model_plans: dict[str, dict] = field(default_factory=dict)
    #: Ensembles by name: {"models": [...], "method": ..., "tau": ..., "select_on": oof | val}.
    ensembles: dict[str, dict] = field(default_factory=dict)
    #: Model grids by name: the models each expanded into (see expand_grids).
    grids: dict[str, list[str]] = field(default_factory=dict)
    #: The models and ensembles drawn on the brain (plots.brain_maps: enabled, models).
    brain_map_models: list[str] = field(default_factory=list)
    #: The transformer models with ROI queries whose attention is drawn (plots.attention_maps).
    attention_models: list[str] = field(default_factory=list)
    #: The readouts section: backend, threads.
    readout_settings: dict[str, Any] = field(default_factory=dict)
    shards: int = 1  # extraction.shards: extraction jobs per backbone
    #: The whole config, defaults filled in (the DAG reads the sections no method resolves).
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def scored_models(self) -> list[str]:
        """Everything that produces merged predictions (results/predictions/<name>/) and is scored:
        the models, then the ensembles."""
        return list(self.models) + list(self.ensembles)

    def model_backbones(self, model: str) -> list[str]:
        return sorted({f.split("/", 1)[0] for f in self.models[model]["features"]})

    def backbone_spec(self, name: str) -> str:
        return canonical(self.backbones[name])

    def weights_file(self, backbone: str) -> str | None:
        """A backbone's local checkpoint, if it has one."""
        w = self.backbones[backbone]["weights"]
        return str(Path(w["path"]).expanduser()) if w["init"] == "checkpoint" and w.get("path") else None

    def model_featureset(self, model: str) -> str:
        """The id of the model's feature set (results/designs/<id>/...)."""
        return self.model_plans[model]["featureset"]

    def model_design(self, model: str) -> str:
        """The name of the model's design within its feature set."""
        return self.model_plans[model]["design"]

    def featureset_spec(self, featureset: str) -> str:
        return canonical(self.feature_sets[featureset])

    def featureset_backbones(self, featureset: str) -> list[str]:
        return sorted({f.split("/", 1)[0] for f in self.feature_sets[featureset]["features"]})

    def featureset_has_pca(self, featureset: str) -> bool:
        return bool(self.feature_sets[featureset].get("pca"))

    def design_kind_spec(self, featureset: str, design: str) -> str:
        return canonical(self.designs[(featureset, design)])

    def design_spec(self, model: str) -> str:
        """What the model's cached design depends on: its feature set, design kind and design
        params (not the fit-only params such as alphas)."""
        fs, design = self.model_featureset(model), self.model_design(model)
        return canonical({"featureset": self.feature_sets[fs], **self.designs[(fs, design)]})

    def fit_spec(self, model: str) -> str:
        """What a fit job of ``model`` runs (``nsdflow fit --spec``). A decomposition readout's
        ``loo`` says whether it also writes its leave-one-out predictions of every training image
        (``oof_pred``): only when an ensemble chooses weights on them (as many bytes as the fMRI,
        and a third of the fit's arithmetic, that nothing else reads)."""
        spec = self._fit_spec(model)
        if "loo" in self.model_plans[model]:
            fit = self.fit_model(model)
            spec["loo"] = any(self.model_plans[m]["loo"] for m in self.model_plans if self.fit_model(m) == fit)
        return canonical(spec)

    def _fit_spec(self, model: str) -> dict[str, Any]:
        mp = self.model_plans[model]
        return {"readout": mp["readout"], "class": mp["class"], "params": mp["params"],
                "cv_folds": mp["cv_folds"], "fold_seed": mp["fold_seed"], "features": mp["features"]}

    def fit_model(self, model: str) -> str:
        """The model whose fit jobs ``model``'s predictions come from: the first model (in config
        order) fitted exactly as it is (same readout, parameters, features, folds, design, jobs and
        backend), so that a model a grid repeats, or two names for one model, cost one fit."""
        return self._fit_models[model]

    @cached_property
    def _fit_models(self) -> dict[str, str]:
        first: dict[str, str] = {}
        return {m: first.setdefault(canonical([self._fit_spec(m), mp["featureset"], mp["design"], mp["fit_jobs"],
                                               self.fit_backend(m)]), m)
                for m, mp in self.model_plans.items()}

    def fit_units(self, model: str, hemi: str) -> list[tuple[str, str]]:
        """The fit jobs a hemisphere's merged predictions come from, as ``(hemi, region)`` of the fit
        rule: every region, one ``hemisphere`` job, or the subject's job over both hemispheres."""
        jobs = self.model_plans[model]["fit_jobs"]
        if jobs == SUBJECT_UNIT:
            return [("both", SUBJECT_UNIT)]
        return [(hemi, HEMISPHERE_UNIT)] if jobs == "hemisphere" else [(hemi, r) for r in self.regions]

    def runs(self, model: str) -> list[str]:
        """The names of a model's runs (nsdflow.readouts.folds): val and test, or one per fold."""
        k = self.model_plans[model]["cv_folds"]
        return [f"k{i}" for i in range(k)] if k else ["val", "test"]

    def pretrained_models(self) -> list[str]:
        """The models whose fits start from rule pretrain's network."""
        return [m for m, mp in self.model_plans.items() if mp["pretrain"]]

    def fit_backend(self, model: str) -> str:
        """``readouts.backend`` for a model's fit jobs; ``auto`` keeps per-region ridge jobs on numpy
        (hundreds of short processes: importing torch and starting CUDA would cost more than the fit)."""
        backend = self.readout_settings.get("backend", "auto")
        mp = self.model_plans[model]
        if backend == "auto" and mp["fit_jobs"] == "region" and mp["readout"] in ("ridge", "pca_linear"):
            return "numpy"
        return backend

    def model_layers(self, model: str) -> list[str]:
        """The ``backbone/layer`` features of a model."""
        return list(self.model_plans[model]["features"])

    def fit_threads(self, model: str) -> int:
        """Threads of a fit job: 1 per region job (many run in parallel), ``readouts.threads`` per hemisphere job."""
        return 1 if self.model_plans[model]["fit_jobs"] == "region" else int(self.readout_settings.get("threads", 2))


def make_plan(config: dict, demo_root: str = results.DEMO_ROOT, demo_withheld: str = results.DEMO_WITHHELD) -> Plan:
    """Resolve and cross-check a schema-validated config."""
    warnings: list[str] = []
    data = config.get("data", {})
    demo = data.get("root", "demo") == "demo"
    if demo:
        root, withheld = demo_root, demo_withheld
        available = [subject_name(i + 1) for i in range(config.get("demo", {}).get("n_subjects", 2))]
    else:
        root, withheld = data["root"], data.get("withheld")
        if not Path(root).is_dir():
            raise ConfigError(f"data.root: {root} does not exist or is not a folder (use \"demo\" for the demo data)")
        try:
            available = list_subjects(root)
        except DataError as err:
            raise ConfigError(f"data.root: {err.problems[0].message}") from None
        if withheld and not Path(withheld).is_dir():
            raise ConfigError(f"data.withheld: {withheld} does not exist or is not a folder")
    wanted = data.get("subjects", "all")
    subjects = available if wanted == "all" else [subject_name(s) for s in wanted]
    missing = [s for s in subjects if s not in available]
    if missing:
        where = "the demo has " + str(len(available)) + " subjects (demo.n_subjects)" if demo else f"{root} has {', '.join(available)}"
        raise ConfigError(f"data.subjects: {', '.join(missing)} not available; {where}")

    roi_classes = list(config.get("regions", {}).get("classes", list(ROI_CLASSES)))
    backbones = config["backbones"]
    models, grids = expand_grids(config["models"])
    used: dict[str, dict] = {}
    for name, m in models.items():
        for feature in m["features"]:
            backbone, _, layer = feature.partition("/")
            if backbone not in backbones:
                raise ConfigError(f"models.{name}.features: {feature!r} names backbone {backbone!r}, which is not "
                                  f"configured; backbones: {', '.join(backbones)}")
            if layer not in backbones[backbone]["layers"]:
                raise ConfigError(f"models.{name}.features: {feature!r}: backbone {backbone!r} stores no layer "
                                  f"{layer!r}; add it under backbones.{backbone}.layers (stored: "
                                  f"{', '.join(backbones[backbone]['layers'])})")
            used[backbone] = backbones[backbone]
    for name in backbones:
        if name not in used:
            warnings.append(f"backbone {name!r} is configured but no model uses it: it is not extracted")
    for name, b in backbones.items():
        w = b["weights"]
        if w["init"] == "checkpoint" and not w.get("path"):
            raise ConfigError(f"backbones.{name}.weights: init is checkpoint but path is not set")
        if w["init"] == "checkpoint" and not Path(w["path"]).expanduser().is_file():
            raise ConfigError(f"backbones.{name}.weights.path: {w['path']} does not exist (weights are never "
                              "downloaded at run time: download the checkpoint once and point to it)")
        if w["init"] == "pretrained" and b["kind"] != "clip":
            raise ConfigError(f"backbones.{name}.weights: init pretrained (an open_clip tag) is for clip backbones; "
                              "use init: checkpoint with a local file")
        if w["init"] == "pretrained" and not w.get("tag"):
            raise ConfigError(f"backbones.{name}.weights: init is pretrained but tag is not set")
        size = b.get("input_size")
        multiple = {"sam": 16, "dinov2": 14}.get(b["kind"])
        if size and multiple and size % multiple:
            raise ConfigError(f"backbones.{name}.input_size: {size} is not a multiple of {multiple} ({b['kind']}'s "
                              f"patch size); use {size // multiple * multiple or multiple}")
    images = config.get("images") or {}
    if images.get("source") == "hdf5":
        if not images.get("hdf5"):
            raise ConfigError("images.hdf5: images.source is hdf5 but no file is set; point it at NSD's "
                              "nsd_stimuli.hdf5, or set images.source: png")
        if not Path(images["hdf5"]).expanduser().is_file():
            raise ConfigError(f"images.hdf5: {images['hdf5']} does not exist; point it at NSD's nsd_stimuli.hdf5, "
                              "or set images.source: png")
    if (config.get("plots") or {}).get("split") == "test" and not demo:
        from .data.layout import WithheldPaths

        lacking = [s for s in subjects if not withheld or not WithheldPaths(withheld, s).test_fmri("lh").is_file()]
        if lacking:
            raise ConfigError(f"plots.split: test needs the withheld test responses, which {', '.join(lacking)} "
                              "lack (data.withheld/subjXX/lh_test_fmri.npy); use val")
    feature_sets, designs, model_plans = plan_readouts(models, int((config.get("split") or {}).get("seed", 0)))
    ensembles = plan_ensembles(config.get("ensembles") or {}, models, grids, model_plans)
    chooses_on_oof = {m for e in ensembles.values() if e["select_on"] == "oof" for m in e["models"]}
    for name, mp in model_plans.items():
        if "loo" in mp:  # a decomposition readout: leave-one-out predictions where an ensemble reads them
            mp["loo"] = name in chooses_on_oof
    for name, mp in model_plans.items():
        if mp["design"] is None:
            for feature in mp["features"]:
                backbone, _, layer = feature.partition("/")
                if backbones[backbone]["layers"][layer]["pool"] != "grid":
                    raise ConfigError(f"models.{name}.features: readout {mp['readout']} reads feature maps; "
                                      f"store {feature} with pool: grid (backbones.{backbone}.layers.{layer}.pool)")
    sub = (config.get("submission") or {}).get("model") or next(iter(models))
    if sub not in models and sub not in ensembles:
        msg = f"submission.model: {sub!r} is not a configured model{' or ensemble' if ensembles else ''}; " \
              f"models: {', '.join(models)}"
        raise ConfigError(msg + (f"; ensembles: {', '.join(ensembles)}" if ensembles else ""))
    brain_maps = (config.get("plots") or {}).get("brain_maps") or {}
    if brain_maps.get("enabled", True) is False:
        drawn = []
    elif brain_maps.get("models") is None:
        drawn = list(models) + list(ensembles)
    else:
        scored = set(models) | set(ensembles)
        unknown = [m for m in brain_maps["models"] if m not in scored and m not in grids]
        if unknown:
            raise ConfigError(f"plots.brain_maps.models: {', '.join(map(repr, unknown))} "
                              f"{'is' if len(unknown) == 1 else 'are'} not a configured model, grid or ensemble")
        drawn = list(dict.fromkeys(x for m in brain_maps["models"] for x in grids.get(m, [m])))
    attention = [m for m, mp in model_plans.items() if mp["readout"] == "transformer"
                 and mp["params"].get("queries") != "vertex"] if (config.get("plots") or {}).get("attention_maps", True) else []
    return Plan(
        data_root=str(root), withheld=str(withheld) if withheld else None, demo=demo, subjects=subjects,
        regions=region_names(roi_classes), roi_classes=roi_classes, backbones=used, models=dict(models),
        submission_model=sub, warnings=warnings, feature_sets=feature_sets, designs=designs,
        model_plans=model_plans, ensembles=ensembles, grids=grids, brain_map_models=drawn, attention_models=attention,
        shards=int((config.get("extraction") or {}).get("shards", 1)),
        readout_settings={"backend": "auto", "threads": 2, **(config.get("readouts") or {})},
        config=config,
    )


def expand_grids(models: dict[str, dict]) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """Models with a ``grid`` expanded into one named model per combination, each its own jobs.

    ``grid.features: subsets``: every non-empty subset of the model's ``features``, in order, named
    by the positions it keeps (``<name>.f0``, ``<name>.f02``...); ``grid.params: {param: [values]}``:
    every combination of the listed values (``<name>.lr0.001``). Both together multiply. Returns the
    models and, per grid, the names it expanded into (an ensemble may list the grid's name).
    """
    import itertools
    import re

    out: dict[str, dict] = {}
    grids: dict[str, list[str]] = {}
    for name, m in models.items():
        grid = m.get("grid")
        if not grid:
            out[name] = m
            continue
        base = {k: v for k, v in m.items() if k != "grid"}
        subsets = [([], list(range(len(m["features"]))))]
        if grid.get("features") == "subsets":
            n = len(m["features"])
            subsets = [(["f" + "".join(map(str, keep))], list(keep)) for k in range(1, n + 1)
                       for keep in itertools.combinations(range(n), k)]
        params = grid.get("params") or {}
        values = list(itertools.product(*params.values())) if params else [()]
        members = []
        for (tag, keep), combo in itertools.product(subsets, values):
            tags = tag + [re.sub(r"[^A-Za-z0-9_.-]", "_", f"{p}{v}") for p, v in zip(params, combo)]
            member = ".".join([name, *tags])
            if member in models or member in out:
                raise ConfigError(f"models.{name}.grid: its model {member!r} has the name of another model")
            out[member] = {**base, "features": [m["features"][i] for i in keep],
                           "params": {**(base.get("params") or {}), **dict(zip(params, combo))}}
            members.append(member)
        grids[name] = members
    return out, grids


def plan_readouts(models: dict[str, dict], fold_seed: int = 0) -> tuple[dict, dict, dict]:
    """Each model's readout params (checked, defaults filled), feature set, design, fit jobs and runs.

    Models with the same features, standardisation and PCA share a feature set (one PCA per
    subject, or one for every subject with ``pca.scope: all``); models whose readouts need the
    same design of it share that design. Readouts that read feature maps (design ``grid``) have
    neither: their fits read the feature stores. ``fold_seed`` (``split.seed``) decides the folds
    of ``cv_folds``.
    """
    from .readouts.designs import design_name
    from .readouts.featuresets import featureset_id, featureset_spec
    from .readouts.registry import get_readout, readout_path

    feature_sets: dict[str, dict] = {}
    designs: dict[tuple[str, str], dict] = {}
    model_plans: dict[str, dict] = {}
    for name, m in models.items():
        r = get_readout(m["readout"])
        try:
            params = r.normalize(m.get("params"))
        except ValueError as err:
            raise ConfigError(f"models.{name}.params.{err}") from None
        pca = m.get("pca")
        if m["readout"] == "pca_linear" and not pca:
            raise ConfigError(f"models.{name}: readout pca_linear needs pca (the challenge devkit's: "
                              "pca: {n_components: 100, batch_size: 300})")
        fit_jobs = m.get("fit_jobs") or "auto"
        fit_jobs = r.default_fit_jobs if fit_jobs == "auto" else fit_jobs
        if fit_jobs not in r.fit_jobs:
            raise ConfigError(f"models.{name}.fit_jobs: readout {r.name} fits jobs per {' or '.join(r.fit_jobs)}, "
                              f"not {fit_jobs}")
        cv_folds = m.get("cv_folds")
        if cv_folds and not r.trained:
            raise ConfigError(f"models.{name}.cv_folds: readout {r.name} takes no folds (its out-of-fold predictions "
                              "are its exact leave-one-out predictions, made with every fit)")
        fs = dname = None
        if r.design == "grid":
            if pca or m.get("standardize") is not None:
                raise ConfigError(f"models.{name}: readout {r.name} reads feature maps as they are stored; it takes "
                                  "no pca or standardize")
        else:
            standardize = m.get("standardize")
            spec = featureset_spec(m["features"], r.default_standardize if standardize is None else standardize, pca)
            fs = featureset_id(spec)
            if feature_sets.setdefault(fs, spec) != spec:  # pragma: no cover - ids encode the spec or its hash
                raise ConfigError(f"models.{name}: feature set id {fs!r} collides with a different spec")
            dparams = r.design_params(params)
            dname = design_name(r.design, dparams)
            designs[(fs, dname)] = {"kind": r.design, "params": dparams}
        model_plans[name] = {"readout": m["readout"], "class": readout_path(m["readout"]), "params": params,
                             "featureset": fs, "design": dname, "fit_jobs": fit_jobs, "cv_folds": cv_folds or None,
                             "fold_seed": fold_seed, "features": list(m["features"]),
                             "pretrain": r.pretrains(params), "oof": r.design == "decomposition" or bool(cv_folds)}
        if r.design == "decomposition":  # leave-one-out predictions: make_plan sets it for the ensembles
            model_plans[name]["loo"] = False
        if model_plans[name]["pretrain"] and not (pca or {}).get("scope") == "all":
            raise ConfigError(f"models.{name}: a network pretrained on every subject needs their features reduced "
                              "the same way: set pca: {n_components: ..., batch_size: ..., scope: all}")
    return feature_sets, designs, model_plans


def plan_ensembles(ensembles: dict[str, dict], models: dict[str, dict], grids: dict[str, list[str]] | None = None,
                   model_plans: dict[str, dict] | None = None) -> dict[str, dict]:
    """Check each ensemble's members (models, or grids: all their models), method and selection;
    ensembles are named like models and must not clash."""
    grids = grids or {}
    out = {}
    for name, e in ensembles.items():
        if name in models or name in grids:
            raise ConfigError(f"ensembles.{name}: a model has the same name; ensembles and models share "
                              "results/predictions/<name>/, so rename one")
        unknown = [m for m in e["models"] if m not in models and m not in grids]
        if unknown:
            raise ConfigError(f"ensembles.{name}.models: {', '.join(map(repr, unknown))} not configured models or "
                              f"grids; models: {', '.join(models)}")
        members = [x for m in e["models"] for x in grids.get(m, [m])]
        if len(set(members)) != len(members):
            raise ConfigError(f"ensembles.{name}.models: a model is listed twice")
        if len(members) < 2:
            raise ConfigError(f"ensembles.{name}.models: an ensemble needs two or more models")
        select_on = e.get("select_on", "oof")
        if select_on == "oof" and model_plans:
            lacking = [m for m in members if not model_plans[m]["oof"]]
            if lacking:
                raise ConfigError(f"ensembles.{name}: members {', '.join(lacking)} make no out-of-fold predictions "
                                  "to choose weights on: give them cv_folds, or set select_on: val")
        out[name] = {"models": members, "method": e.get("method", "best"), "tau": float(e.get("tau", 0.025)),
                     "select_on": select_on}
    return out
