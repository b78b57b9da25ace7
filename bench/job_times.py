"""Where a finished run's time went: per rule, the jobs and their summed wall time.

Reads Snakemake's metadata of a run folder (one record per output, with the job's start and end
times), so it measures any run after the fact:

    python bench/job_times.py RUN_FOLDER [--markdown]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def job_times(workdir: Path) -> dict[str, list[float]]:
    """Per rule, the wall time of each job (seconds), from ``.snakemake/metadata``."""
    spans, out = {}, defaultdict(list)
    for path in (Path(workdir) / ".snakemake" / "metadata").iterdir():
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        rule, start, end = record.get("rule"), record.get("starttime"), record.get("endtime")
        if None in (rule, start, end):
            continue
        # A job with several outputs has one record per output (one job_hash): the job ran from
        # its first start to its last output.
        job = (rule, record.get("job_hash"), start if record.get("job_hash") is None else None)
        first, last = spans.get(job, (start, end))
        spans[job] = (min(first, start), max(last, end))
    for (rule, _, _), (start, end) in spans.items():
        out[rule].append(end - start)
    return dict(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workdir", type=Path)
    a = ap.parse_args(argv)
    times = job_times(a.workdir)
    print("| rule | jobs | job time, s (sum) | mean s per job |")
    print("|---|---|---|---|")
    for rule, t in sorted(times.items(), key=lambda kv: -sum(kv[1])):
        print(f"| {rule} | {len(t)} | {sum(t):.1f} | {sum(t) / len(t):.2f} |")
    total = [x for t in times.values() for x in t]
    print(f"| all | {len(total)} | {sum(total):.1f} | {sum(total) / max(len(total), 1):.2f} |")


if __name__ == "__main__":
    main()
