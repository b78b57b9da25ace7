"""The submission stage's commands: assemble and check the zip (rule submission), and check any
zip by hand (``nsdflow check-submission``)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..args import pairs


def _report(zip_path, report, out) -> None:
    """Print the check's report; keep ``out`` only for a zip that passed."""
    print(report)
    if out:
        from ..io import atomic_write_text

        if report.ok:
            atomic_write_text(out, f"{zip_path}\n{report}\n")
        else:
            Path(out).unlink(missing_ok=True)
    if not report.ok:
        print(f"nsdflow: {zip_path} would be rejected: {len(report.errors)} problems (listed above)", file=sys.stderr)
        raise SystemExit(1)


def cmd_submission(a) -> None:
    from ..io import load_npz
    from .archive import assemble_submission, check_submission

    preds = {}
    for key, path in pairs(a.pred).items():
        subject, hemi = key.split(":")
        preds[(subject, hemi)] = load_npz(path)["test_pred"]
    assemble_submission(preds, a.out)
    print(f"{len(preds)} prediction arrays -> {a.out}")
    report = check_submission(a.out, a.data)
    if not report.ok:
        Path(a.out).unlink(missing_ok=True)  # a zip the leaderboard would reject is not kept
    _report(a.out, report, a.check)


def cmd_check_submission(a) -> None:
    from .archive import check_submission

    _report(a.zip, check_submission(a.zip, a.data), a.out)


def register(add) -> None:
    s = add("submission", cmd_submission, "assemble the submission zip from merged predictions, then check it")
    s.add_argument("--pred", nargs="+", required=True, help="SUBJECT:HEMI=MERGED_NPZ")
    s.add_argument("--data", required=True, help="data root (gives the expected shapes)")
    s.add_argument("--out", required=True, help="the zip (removed if the check fails)")
    s.add_argument("--check", help="write the check's report here when the zip passes")

    s = add("check-submission", cmd_check_submission, "check a submission zip against a data root")
    s.add_argument("zip")
    s.add_argument("--data", required=True, help="data root (gives the expected shapes)")
    s.add_argument("--out", help="write the check's report here when the zip passes (removed when it fails)")
