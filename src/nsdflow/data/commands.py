"""The data stage's commands: ``nsdflow demo`` and ``nsdflow validate-data`` (rules demo, validate_data)."""

from __future__ import annotations

import time
from pathlib import Path


def cmd_demo(a) -> None:
    from .demo import DemoConfig, write_demo

    cfg = DemoConfig(seed=a.seed, n_subjects=a.subjects, n_train=a.n_train, n_test=a.n_test, n_shared=a.n_shared,
                     image_size=a.image_size, roi_dropout=a.roi_dropout)
    manifest = write_demo(a.data, a.withheld, cfg)
    print(f"demo dataset: {len(manifest['subjects'])} subjects, {manifest['n_unique_images']} unique images -> {a.data}")


def cmd_validate_data(a) -> None:
    from ..io import atomic_write_json
    from .layout import ROI_CLASSES, subject_name
    from .read import DataError, list_subjects
    from .validate import validate_subject

    subjects = a.subject or list_subjects(a.data)
    classes = tuple(ROI_CLASSES) if a.roi_classes is None else tuple(a.roi_classes)
    summaries, problems = [], []
    for subject in subjects:  # every subject checked, every problem listed, before any summary is written
        t0 = time.time()
        try:
            summary = validate_subject(a.data, subject, roi_classes=classes, check_finite=not a.no_finite_check,
                                       check_images=not a.no_image_check)
        except DataError as err:
            problems += err.problems
            continue
        nv = ", ".join(f"{h} {n}" for h, n in summary.n_vertices.items())
        print(f"{summary.subject}: {summary.n_train} training images, {summary.n_test} test images, "
              f"vertices {nv} - OK ({time.time() - t0:.1f} s)")
        summaries.append(summary)
    outputs = {}
    if a.out:
        outputs = {s: Path(a.out) if len(subjects) == 1 else Path(a.out) / f"{subject_name(s)}.json" for s in subjects}
    if problems:
        for path in outputs.values():  # an earlier run's summary must not look like this run's pass
            path.unlink(missing_ok=True)
        raise DataError(problems)
    for subject, summary in zip(subjects, summaries):
        if outputs:
            atomic_write_json(outputs[subject], summary.to_dict())


def register(add) -> None:
    s = add("demo", cmd_demo, "generate the demo dataset (Algonauts layout + withheld test responses and ceilings)")
    s.add_argument("--data", required=True, help="where to write the public layout (subjXX/...)")
    s.add_argument("--withheld", required=True, help="where to write test fMRI, noise ceilings, ground truth")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--subjects", type=int, default=2)
    s.add_argument("--n-train", type=int, default=300)
    s.add_argument("--n-test", type=int, default=50)
    s.add_argument("--n-shared", type=int, default=60)
    s.add_argument("--image-size", type=int, default=128)
    s.add_argument("--roi-dropout", type=float, default=0.1)

    s = add("validate-data", cmd_validate_data, "check a data root against the Algonauts 2023 layout")
    s.add_argument("--data", required=True, help="data root holding subjXX/ folders")
    s.add_argument("--subject", action="append", help="subject to check (repeatable); default: all in the root")
    s.add_argument("--roi-classes", nargs="*", default=None, help="ROI classes that must be present (default: all six)")
    s.add_argument("--no-finite-check", action="store_true", help="skip the NaN/inf scan of the fMRI")
    s.add_argument("--no-image-check", action="store_true",
                   help="skip verifying that every PNG is complete and uncorrupted")
    s.add_argument("--out", help="write the summary as JSON (a file for one subject, a folder for several)")
