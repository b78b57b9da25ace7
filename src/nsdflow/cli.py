"""``nsdflow``: the command line behind every workflow rule, usable by hand.

Each workflow rule runs the command of its own name (rule ``validate_data`` runs ``nsdflow
validate-data``; ``snakemake -p`` prints the exact command), so any step can be rerun, debugged or
timed outside Snakemake. The commands live beside their logic, one module per stage
(``nsdflow/<stage>/commands.py``); this module only gathers them and turns errors into one line.
``nsdflow --help`` lists them; ``nsdflow <command> --help`` describes each.
"""

from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger("nsdflow")

#: The stages whose ``commands`` modules register commands, in the DAG's order.
STAGES = ("data", "features", "readouts", "evaluate", "report", "submission")


def cmd_config_help(a) -> None:
    from .config import describe_schema

    print(describe_schema())


def cmd_changes(a) -> None:
    """Record which jobs are rerun because their code, config or data changed (rule changes)."""
    import json
    import time

    from .io import atomic_write_json

    stamp = json.loads(a.stamp)
    counts, missing = stamp["jobs"], stamp.get("missing", 0)
    atomic_write_json(a.out, {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "changed_jobs": counts,
                              "jobs_without_output": missing})
    total = sum(counts.values())
    print(f"{total} jobs rerun because their code, config or data changed" +
          (": " + ", ".join(f"{rule} {n}" for rule, n in counts.items()) if counts else "") +
          f"; {missing} jobs make missing or incomplete outputs")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    p = argparse.ArgumentParser(prog="nsdflow", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, fn, help_):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn)
        return sp

    for stage in STAGES:
        importlib.import_module(f"nsdflow.{stage}.commands").register(add)
    add("config-help", cmd_config_help, "describe every config key (from the workflow's JSON schema)")
    s = add("changes", cmd_changes, "record which jobs rerun because their code, config or data changed")
    s.add_argument("--stamp", required=True, help='{"jobs": {rule: count}, ...} as JSON')
    s.add_argument("--out", required=True)
    return p


def _report_error(command: str, msg) -> None:
    # On a line of its own: a progress bar may have left the cursor mid-line.
    sys.stderr.write(f"\nnsdflow {command}: error: {msg}\n")


def _out_of_memory(args, err: BaseException) -> str | None:
    """What to change when a command ran out of GPU or host memory (None for other errors)."""
    name = getattr(args, "name", None)
    if type(err).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch
        first = str(err).split("\n")[0].split(". ")[0]
        if args.command == "extract" and name:
            return f"the GPU ran out of memory ({first}): lower backbones.{name}.batch_size in the config and rerun"
        return (f"the GPU ran out of memory ({first}): free the GPU, or set readouts.backend: numpy "
                "to fit on the CPU")
    if isinstance(err, MemoryError):
        return (f"ran out of memory ({err or 'MemoryError'}): give this job more (set-resources: "
                f"<rule>: mem_mb in the profile; extraction.mem_mb for extraction) or run fewer jobs at once")
    return None


def _record_imports(args) -> None:
    """Append the package's modules this command imported to $NSDFLOW_IMPORT_LOG (JSON lines): a
    test checks that each rule's code digest covers them (nsdflow.codeversion)."""
    import json
    import os

    path = os.environ.get("NSDFLOW_IMPORT_LOG")
    if path:
        spec = getattr(args, "spec", None)
        record = {"command": args.command, "modules": sorted(m for m in sys.modules if m.split(".")[0] == "nsdflow"),
                  "readout": spec.get("class") if isinstance(spec, dict) else None}
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import atexit

    atexit.register(_record_imports, args)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from .data.read import DataError
    from .io import OutputError, explain_os_error

    # Errors that carry a message meant for the user (BackboneError, PoolingError are ValueErrors).
    known = (DataError, OutputError, ValueError, KeyError, FileNotFoundError, RuntimeError)
    try:
        args.fn(args)
    except (MemoryError, RuntimeError) as err:
        msg = _out_of_memory(args, err)
        if msg is None or args.debug:
            if isinstance(err, MemoryError) or args.debug:
                raise
            msg = err  # any other RuntimeError: its message is meant for the user
        _report_error(args.command, msg)
        return 1
    except known as err:
        if args.debug:
            raise
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        _report_error(args.command, msg)
        return 1
    except OSError as err:
        # A full disk or an unwritable folder, wherever it surfaced (zarr, numpy, PIL): say so plainly.
        # write() errors carry no file name: name what this command was writing instead.
        outputs = [str(getattr(args, k)) for k in ("store", "out", "outdir", "manifest", "json") if getattr(args, k, None)]
        msg = explain_os_error(err, None if err.filename else " / ".join(outputs) or None)
        if msg is None or args.debug:
            raise
        _report_error(args.command, msg)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
