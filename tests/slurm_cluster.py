"""A real one-node SLURM cluster on this machine, for the tests of ``profiles/slurm``.

:class:`SlurmCluster` writes a ``slurm.conf`` for this host (from ``slurmd -C``), starts
``slurmctld -D`` and ``slurmd -D`` as child processes, waits until the node is idle, and stops
both by their process ids. Everything it writes (config, state, spool, logs, fake GPU device
nodes) lives in one temporary folder, and it listens on two free ports of 127.0.0.1, so that
several clusters (or test sessions) can run side by side and a fresh clone starts clean.

Choices, each forced by running without systemd, cgroups or a database:

- ``ProctrackType=proctrack/linuxproc`` and ``TaskPlugin=task/none``: no cgroups;
- ``AuthType=auth/none`` and ``CredType=cred/none``: no munge daemon to start (one user, one host);
- no accounting (``AccountingStorageType=accounting_storage/none``): ``sacct`` knows nothing, so
  the executor plugin must poll ``squeue`` (``--slurm-status-command squeue``), and finished jobs
  stay visible to ``squeue`` for ``MinJobAge`` seconds (large here);
- ``Gres=gpu:N`` with ``GresTypes=gpu`` and a ``gres.conf`` whose ``File=`` entries are fake
  character devices made with ``mknod``: enough for SLURM to schedule ``--gpus=1`` requests;
- the config is not at SLURM's default path (/etc/slurm/slurm.conf) but named by ``SLURM_CONF``,
  which the executor's job step strips from the environment of its inner ``srun``; so
  :attr:`SlurmCluster.env` puts first on ``PATH`` a ``bin/srun`` that sets it again. On a real
  cluster the config is at its default path and nothing of this is needed.

Run ``python tests/slurm_cluster.py`` to start one by hand: it prints the ``SLURM_CONF`` to
export and runs until Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DAEMONS = ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "srun")


def missing_reason() -> str | None:
    """Why a SLURM cluster cannot be started here, or None if it can."""
    missing = [d for d in DAEMONS if shutil.which(d) is None and not Path("/usr/sbin", d).exists()]
    if missing:
        return (f"SLURM is not installed ({', '.join(missing)} not found): install Debian's slurm-wlm "
                "(.ci/install-system-packages does so for `make test` when run as root)")
    if os.geteuid() != 0:
        return "the test SLURM cluster runs its daemons as root (SlurmUser=root); run the tests as root"
    return None


def _exe(name: str) -> str:
    """The absolute path of a SLURM program, never one of the ``bin/`` wrappers that clusters write."""
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if not (Path(d).parent / "slurm.conf").exists()]
    return shutil.which(name, path=os.pathsep.join(dirs + ["/usr/bin", "/usr/sbin"])) or str(Path("/usr/sbin", name))


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the process that started us dies, even by SIGKILL
    (Linux prctl PR_SET_PDEATHSIG), so that a killed test run leaves no daemons behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except OSError:
        pass


def node_hardware() -> dict[str, str]:
    """``slurmd -C``'s description of this host: NodeName, CPUs, Boards, ..., RealMemory."""
    out = subprocess.run([_exe("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("NodeName="))
    return dict(item.split("=", 1) for item in line.split())


def slurm_conf(base: Path, hw: dict[str, str], ports: tuple[int, int], gpus: int, cluster: str) -> str:
    """The slurm.conf text of a one-node cluster rooted at ``base``."""
    node = hw["NodeName"]
    hardware = " ".join(f"{k}={hw[k]}" for k in ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket",
                                                  "ThreadsPerCore", "RealMemory") if k in hw)
    return f"""\
# One-node test cluster written by tests/slurm_cluster.py; everything lives under {base}.
ClusterName={cluster}
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldLogFile={base}/slurmctld.log
SlurmdLogFile={base}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SwitchType=switch/none
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=86400
ReturnToService=2
InactiveLimit=0
KillWait=5
SlurmctldTimeout=300
SlurmdTimeout=300
GresTypes=gpu
NodeName={node} NodeAddr=127.0.0.1 {hardware} Gres=gpu:{gpus} State=UNKNOWN
PartitionName=main Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    """A one-node SLURM cluster in ``base`` (a fresh folder); use as a context manager."""

    def __init__(self, base: str | Path, gpus: int = 2, cluster: str = "nsdflowtest"):
        self.base = Path(base)
        self.gpus = gpus
        self.cluster = cluster
        self.procs: dict[str, subprocess.Popen] = {}
        self.conf = self.base / "slurm.conf"
        self.node = ""
        self.memory_mb = 0

    # ------------------------------------------------------------------ setup

    def write_config(self) -> None:
        for sub in ("state", "spool", "dev"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        hw = node_hardware()
        self.node = hw["NodeName"]
        self.memory_mb = int(hw.get("RealMemory", 0))
        devices = []
        for i in range(self.gpus):
            dev = self.base / "dev" / f"nvidia{i}"
            if not dev.exists():
                # A character device with NVIDIA's major number: slurmd only checks that it exists.
                os.mknod(dev, 0o666 | 0o020000, os.makedev(195, i))
            devices.append(str(dev))
        self.conf.write_text(slurm_conf(self.base, hw, tuple(_free_ports(2)), self.gpus, self.cluster))
        gres = "".join(f"NodeName={self.node} Name=gpu File={d}\n" for d in devices)
        (self.base / "gres.conf").write_text(gres)
        bindir = self.base / "bin"
        bindir.mkdir(exist_ok=True)
        srun = bindir / "srun"
        srun.write_text(f"#!/bin/sh\nSLURM_CONF={self.conf} exec {_exe('srun')} \"$@\"\n")
        srun.chmod(0o755)

    @property
    def env(self) -> dict[str, str]:
        """The environment in which ``sbatch``, ``squeue``... talk to this cluster."""
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = str(self.base / "bin") + os.pathsep + env.get("PATH", "")
        for var in list(env):  # a cluster of the caller's must not leak into this one
            if var.startswith(("SLURM_JOB", "SLURM_STEP", "SBATCH_", "SRUN_")):
                env.pop(var)
        return env

    def start(self, timeout: float = 60) -> "SlurmCluster":
        self.write_config()
        env = self.env
        for daemon in ("slurmctld", "slurmd"):
            log = open(self.base / f"{daemon}.out", "w")
            args = [_exe(daemon), "-D", "-f", str(self.conf)]
            if daemon == "slurmctld":
                args.append("-i")  # ignore any saved state: a fresh cluster every time
            else:
                args += ["-N", self.node]  # this node, whether or not the host name resolves
            self.procs[daemon] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                                  start_new_session=True, preexec_fn=_die_with_parent)
            log.close()
            if daemon == "slurmctld":
                self._wait(lambda: self._run("scontrol", "ping").returncode == 0, timeout, "slurmctld to answer")
        self._wait(self._node_idle, timeout, f"node {self.node} to become idle")
        return self

    def _run(self, *cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), capture_output=True, text=True, env=self.env, timeout=30)

    def _node_idle(self) -> bool:
        out = self._run("sinfo", "-h", "-N", "-o", "%T").stdout.strip()
        return out.rstrip("*") == "idle"

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} while waiting for {what}:\n"
                                       + self.logs())
            if ready():
                return
            time.sleep(0.5)
        raise TimeoutError(f"waited {timeout:.0f} s for {what}:\n" + self.logs())

    def logs(self, tail: int = 3000) -> str:
        parts = []
        for name in ("slurmctld.out", "slurmctld.log", "slurmd.out", "slurmd.log"):
            path = self.base / name
            if path.exists():
                parts.append(f"--- {path}\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    # ------------------------------------------------------------------ use

    def jobs(self) -> list[dict[str, str]]:
        """Every job the controller still knows (all states): id, name, state, cpus, mem, time limit, comment."""
        out = self._run("squeue", "-h", "--states=all", "-o", "%i|%j|%T|%C|%m|%l|%k").stdout
        keys = ("id", "name", "state", "cpus", "mem", "time_limit", "comment")
        return [dict(zip(keys, (v.strip() for v in line.split("|")))) for line in out.splitlines() if line.strip()]

    def job_details(self, job_id: str) -> str:
        return self._run("scontrol", "show", "job", job_id).stdout

    # ------------------------------------------------------------------ teardown

    def stop(self) -> None:
        # Jobs first (their steps are children of slurmd), then the daemons, by process id.
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self._run("scancel", "--full", "--user", "root") if shutil.which("scancel") else None
        for name in ("slurmd", "slurmctld"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.procs.clear()

    def __enter__(self) -> "SlurmCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    reason = missing_reason()
    if reason:
        sys.exit(reason)
    base = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="slurm-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill PID` stops the daemons too
    with SlurmCluster(base) as cluster:
        print(f"export SLURM_CONF={cluster.conf} PATH={cluster.base / 'bin'}:$PATH", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
