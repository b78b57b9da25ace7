"""Faults: a killed job leaves nothing that looks finished; a full disk or read-only folder says so.

The full-disk and read-only cases use a real tmpfs and a real read-only bind mount (as root, as in
CI): file permissions alone don't stop root, and only a real file system shows what zarr, numpy
and PIL raise. Where mounting is not possible they skip and say why.
"""

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import nsdflow_env

from nsdflow.io import OutputError, atomic_write_json, save_npz, save_table


def _mount(args, target):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs / read-only folder (CI runs as root)")
    proc = subprocess.run(["mount", *args, str(target)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount here: {proc.stderr.strip()}")


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB file system: anything bigger fails with ENOSPC."""
    target = tmp_path / "small_disk"
    target.mkdir()
    _mount(["-t", "tmpfs", "-o", "size=64k", "tmpfs"], target)
    yield target
    subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.fixture
def read_only(tmp_path):
    """A folder on a read-only mount."""
    src, target = tmp_path / "src", tmp_path / "read_only"
    src.mkdir()
    target.mkdir()
    _mount(["--bind", str(src)], target)
    proc = subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], capture_output=True, text=True)
    if proc.returncode != 0:
        subprocess.run(["umount", "-l", str(target)], check=False)
        pytest.skip(f"cannot remount read-only here: {proc.stderr.strip()}")
    yield target
    subprocess.run(["umount", "-l", str(target)], check=False)


def nsdflow(*args):
    return subprocess.run([sys.executable, "-m", "nsdflow.cli", *map(str, args)], capture_output=True, text=True,
                          env=nsdflow_env())


# ----------------------------------------------------------------------------- atomic writes


def test_outputs_get_the_usual_file_mode(tmp_path):
    """Temporary files are private (0600); the finished output must not be, or colleagues can't read it."""
    umask = os.umask(0)
    os.umask(umask)
    for path, write in [(tmp_path / "a.npz", lambda p: save_npz(p, x=np.zeros(3))),
                        (tmp_path / "b.json", lambda p: atomic_write_json(p, {"a": 1})),
                        (tmp_path / "c.csv", lambda p: save_table(__import__("pandas").DataFrame({"a": [1]}), p))]:
        write(path)
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_failed_write_leaves_neither_output_nor_temporary(tmp_path):
    out = tmp_path / "x.npz"
    with pytest.raises(ZeroDivisionError):
        from nsdflow.io import atomic_path

        with atomic_path(out, suffix=".npz") as tmp:
            tmp.write_bytes(b"partial")
            1 / 0
    assert list(tmp_path.iterdir()) == []


def test_killed_writer_leaves_no_finished_looking_file(tmp_path):
    """SIGKILL while a large output is being written: the output is absent, or complete; never partial."""
    out = tmp_path / "big.npz"
    script = textwrap.dedent(f"""
        import numpy as np, sys
        from nsdflow.io import save_npz
        print("writing", flush=True)
        save_npz({str(out)!r}, x=np.ones((6000, 6000), np.float32))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=nsdflow_env())
    assert proc.stdout.readline().strip() == "writing"
    # Kill as soon as the temporary file appears (mid-write), or after 5 s.
    deadline = time.time() + 5
    while time.time() < deadline and not any(p.name.startswith(".big.npz.") for p in tmp_path.iterdir()):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if out.exists():  # the write beat the kill: then the file must be whole
        with np.load(out) as f:
            assert f["x"].shape == (6000, 6000)
    else:
        leftovers = [p.name for p in tmp_path.iterdir()]
        assert all(name.startswith(".big.npz.") for name in leftovers), leftovers


# ----------------------------------------------------------------------------- full disk, read-only


def test_atomic_write_on_a_full_disk(full_disk):
    with pytest.raises(OutputError, match=r"cannot write .*big\.npz: the disk is full"):
        save_npz(full_disk / "big.npz", x=np.ones(1_000_000, np.float32))
    assert list(full_disk.iterdir()) == []  # no partial output, no temporary file


def test_atomic_write_in_a_read_only_folder(read_only):
    with pytest.raises(OutputError, match=r"cannot write .*x\.json: the file system is read-only"):
        atomic_write_json(read_only / "sub" / "x.json", {"a": 1})


@pytest.fixture(scope="module")
def image_index(tmp_path_factory):
    """An image index of a tiny demo subject (real PNGs), for the image-cache command."""
    from conftest import TINY

    from nsdflow.data.demo import generate

    base = tmp_path_factory.mktemp("faults_demo")
    generate(base / "root", base / "withheld", TINY)
    index = base / "index.csv"
    assert nsdflow("index-images", "--data", base / "root", "--subjects", "subj01", "--out", index).returncode == 0
    return index


def test_zarr_store_on_a_full_disk_says_so(full_disk, image_index):
    """The image cache writes through zarr: the error must still be one plain sentence, not zarr's traceback."""
    proc = nsdflow("cache-images", "--index", image_index, "--store", full_disk / "cache.zarr",
                   "--out", full_disk / "cache.json", "--chunk", "4")
    assert proc.returncode == 1
    assert "nsdflow cache-images: error: cannot write" in proc.stderr
    assert "cache.zarr" in proc.stderr and "the disk is full" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (full_disk / "cache.json").exists()  # the rule's output (the manifest) was never written


def test_zarr_store_in_a_read_only_folder_says_so(read_only, image_index):
    proc = nsdflow("cache-images", "--index", image_index, "--store", read_only / "cache.zarr",
                   "--out", read_only / "cache.json")
    assert proc.returncode == 1
    assert re.search(r"cache\.zarr(\.lock)?: the file system is read-only", proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr


def test_debug_flag_shows_the_traceback(read_only):
    proc = nsdflow("--debug", "score", "--pred", Path(__file__), "--true", Path(__file__), "--out", read_only / "s.json")
    assert "Traceback" in proc.stderr


# ----------------------------------------------------------------------------- out of memory


class OutOfMemoryError(RuntimeError):
    """Stands in for torch.OutOfMemoryError (matched by name, as the CLI does without importing torch)."""


FIT = ["fit", "--spec", "{}", "--design", "d", "--data", "D", "--subject", "subj01", "--hemi", "lh", "--regions", "r",
       "--region", "V1v", "--summary", "s", "--split", "p", "--out", "o"]


@pytest.mark.parametrize("command, raised, says", [
    (["extract", "--name", "clip", "--spec", "{}", "--images", "i", "--store", "s", "--out", "m"],
     OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has ..."),
     "the GPU ran out of memory (CUDA out of memory): lower backbones.clip.batch_size in the config"),
    (FIT,
     OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB"),
     "set readouts.backend: numpy"),
    (FIT,
     MemoryError("Unable to allocate 12.0 GiB for an array"),
     "ran out of memory (Unable to allocate 12.0 GiB for an array): give this job more"),
])
def test_out_of_memory_says_what_to_change(monkeypatch, capsys, command, raised, says):
    from nsdflow import cli

    def boom(args):
        raise raised

    stage = {"extract": "features", "fit": "readouts"}[command[0]]
    monkeypatch.setattr(f"nsdflow.{stage}.commands.cmd_{command[0]}", boom)
    assert cli.main(command) == 1
    err = capsys.readouterr().err
    assert f"nsdflow {command[0]}: error: " in err and says in err
    assert "Traceback" not in err


def test_other_runtime_errors_keep_their_message(monkeypatch, capsys):
    from nsdflow import cli

    def boom(args):
        raise RuntimeError("device 'cuda' requested but no CUDA GPU is visible (CUDA_VISIBLE_DEVICES?)")

    monkeypatch.setattr("nsdflow.features.commands.cmd_extract", boom)
    assert cli.main(["extract", "--name", "a", "--spec", "{}", "--images", "i", "--store", "s", "--out", "m"]) == 1
    assert "error: device 'cuda' requested but no CUDA GPU is visible" in capsys.readouterr().err
