"""Each rule's code digest covers exactly the code its command reaches (nsdflow.codeversion)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from nsdflow.codeversion import (
    closure,
    code_digest,
    command_entry,
    command_modules,
    imports_of,
)

COMMANDS = ["demo", "validate-data", "index-images", "cache-images", "check-backbone", "extract", "combine-features",
            "split", "regions", "targets", "pca", "design", "fit", "merge", "ensemble", "selection", "score-vertices",
            "summarize", "scores-page", "plot-roi-bars", "plot-models", "plot-brain-map", "provenance", "submission",
            "changes"]


def test_imports_are_resolved_relative_absolute_and_inside_functions():
    found = imports_of("nsdflow.readouts.fit")
    assert {"nsdflow.io", "nsdflow.readouts.designs", "nsdflow.readouts.targets"} <= found
    assert "nsdflow.data.read" in found  # imported inside fit_unit
    assert "nsdflow.readouts.regions" in closure(["nsdflow.evaluate.score"])
    assert {"nsdflow", "nsdflow.readouts"} <= closure(["nsdflow.readouts.merge"])  # parents' __init__ run too


def test_every_rules_command_is_found_and_reaches_io():
    for command in COMMANDS:
        module, function = command_entry(command)
        assert function == "cmd_" + command.replace("-", "_")
        assert "nsdflow.io" in command_modules(command), command
    assert "nsdflow.evaluate.scoring" not in command_modules("merge")  # merging never scores
    assert "nsdflow.evaluate.scoring" in command_modules("ensemble")  # ensembles select by r
    assert "nsdflow.readouts.torch_models" not in command_modules("fit")
    assert "nsdflow.readouts.torch_models" in command_modules("fit", ("nsdflow.readouts.mlp",))


def _digests(src: Path) -> dict[str, str]:
    code = ("import json, sys; from nsdflow.codeversion import code_digest; "
            f"print(json.dumps({{c: code_digest(c) for c in {COMMANDS!r}}}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"})
    return json.loads(out.stdout)


@pytest.fixture
def package_copy(tmp_path):
    dest = tmp_path / "src"
    shutil.copytree(REPO / "src" / "nsdflow", dest / "nsdflow", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def test_which_digests_an_edit_changes(package_copy):
    before = _digests(package_copy)
    assert before == {c: code_digest(c) for c in COMMANDS}
    pkg = package_copy / "nsdflow"

    # A comment, a docstring and blank lines: no digest changes.
    _edit(pkg / "readouts/merge.py", '"""Merge a model', '"""Merge (edited) a model')
    (pkg / "io.py").write_text((pkg / "io.py").read_text() + "\n\n# a comment\n")
    assert _digests(package_copy) == before

    # One statement in a function body: the commands that reach the module, and no other.
    _edit(pkg / "readouts/merge.py", "    cover = np.zeros(n_vertices, dtype=np.int64)",
          "    cover = np.zeros(int(n_vertices), dtype=np.int64)")
    after = _digests(package_copy)
    assert {c for c in COMMANDS if after[c] != before[c]} == {"merge"}

    _edit(pkg / "evaluate/scoring.py", "    return np.clip(r, -1.0, 1.0)", "    return np.clip(r, -1.0, 1.0).copy()")
    changed = {c for c in COMMANDS if _digests(package_copy)[c] != after[c]}
    assert changed == {c for c in COMMANDS if "nsdflow.evaluate.scoring" in command_modules(c)}
    assert changed == {"score-vertices", "ensemble", "selection"}

    _edit(pkg / "io.py", "    return json.loads(Path(path).read_text())", "    text = Path(path).read_text()\n    return json.loads(text)")
    final = _digests(package_copy)
    assert all(final[c] != after[c] for c in COMMANDS)  # every command writes through io.py


@pytest.mark.e2e
def test_every_module_a_job_imported_is_in_its_digest(tiny_run):
    """The tiny DAG ran with NSDFLOW_IMPORT_LOG set: every module each job imported at run time must
    be one its rule's digest covers (a module reached by no import statement would be missed)."""
    workdir, _ = tiny_run
    records = [json.loads(line) for line in (workdir / "imports.jsonl").read_text().splitlines()]
    assert {r["command"] for r in records} >= {"validate-data", "extract", "fit", "merge", "summarize", "submission"}
    # The dispatcher (nsdflow.cli) imports every stage's parser and what it needs to report errors;
    # a command's digest holds its own function and the declaration of its arguments, not those.
    code = ("import sys, json; from nsdflow import cli; cli.build_parser(); from nsdflow.data.read import DataError; "
            "from nsdflow.io import OutputError; print(json.dumps([m for m in sys.modules if m.startswith('nsdflow')]))")
    dispatch = set(json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                             check=True).stdout))
    for r in records:
        extra = (r["readout"].partition(":")[0],) if r["readout"] else ()
        missing = set(r["modules"]) - command_modules(r["command"], extra) - dispatch
        assert not missing, (r["command"], sorted(missing))
