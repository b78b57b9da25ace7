"""Hostile inputs (issue 12): a data root, a config or a zip can neither run code nor exhaust the machine.

Each test tries the attack itself: a mapping whose pickle runs code, a config whose strings are
shell metacharacters, a zip bomb, a decompression-bomb PNG, an odd first image; and the smaller
holes found with them (non-integer keys, non-string config keys, partial summaries, writes that
a power loss could leave empty).
"""

from __future__ import annotations

import ast
import io
import json
import os
import pickle
import shlex
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest
import yaml
from conftest import REPO, nsdflow_env, run_snakemake, write_subject
from PIL import Image

from nsdflow.data.layout import SubjectPaths
from nsdflow.data.read import DataError, load_roi_mapping, read_mapping_file
from nsdflow.data.validate import validate_subject

GENUINE = {0: "Unknown", 1: "early", 2: "midventral", 3: "midlateral", 4: "midparietal", 5: "ventral",
           6: "lateral", 7: "parietal"}


# ----------------------------------------------------------------------------- pickled mappings


class _RunsCodeThenMaps:
    """Unpickles by calling eval, which touches ``marker`` and then returns the genuine mapping."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return eval, (f"__import__('pathlib').Path({self.marker!r}).touch() or {GENUINE!r}",)


class _RunsShell:
    """Unpickles by calling os.system."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def _poison(root, marker, kind=_RunsCodeThenMaps, roi_class="streams"):
    path = SubjectPaths(root, 1).mapping(roi_class)
    np.save(path, np.array(kind(marker), dtype=object), allow_pickle=True)
    return path


def test_the_poisoned_mapping_is_a_real_attack(small_root, tmp_path):
    """What numpy's own loader does with it: runs the code and returns the genuine dict."""
    marker = tmp_path / "ran"
    path = _poison(small_root, marker)
    assert np.load(path, allow_pickle=True).item() == GENUINE
    assert marker.exists()


@pytest.mark.parametrize("kind, callable_", [(_RunsCodeThenMaps, "builtins.eval"), (_RunsShell, "posix.system")])
def test_a_mapping_whose_pickle_runs_code_is_refused_by_name(small_root, tmp_path, kind, callable_):
    marker = tmp_path / "ran"
    _poison(small_root, marker, kind)
    with pytest.raises(DataError) as info:
        validate_subject(small_root, 1)
    assert f"mapping_streams.npy: refused: its pickle calls {callable_}, which a mapping never holds" in str(info.value)
    assert not marker.exists()


def test_validate_data_refuses_the_poisoned_mapping(small_root, tmp_path):
    marker = tmp_path / "ran"
    _poison(small_root, marker)
    proc = subprocess.run([sys.executable, "-m", "nsdflow.cli", "validate-data", "--data", str(small_root),
                           "--no-image-check"], capture_output=True, text=True, env=nsdflow_env())
    assert proc.returncode == 1
    assert "mapping_streams.npy: refused: its pickle calls builtins.eval" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists()


def test_the_dag_refuses_the_poisoned_mapping(tmp_path):
    """Through Snakemake: the validate_data job fails naming the file, nothing runs, and the jobs that
    read the mappings after it (regions) never start."""
    root = tmp_path / "data"
    write_subject(root, "subj01", 12, 3, {"lh": 20, "rh": 22})
    marker = tmp_path / "ran"
    _poison(root, marker)
    config = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())
    config["data"] = {"root": str(root), "check_images": False}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    proc = run_snakemake(tmp_path, "--keep-going", "results/data/subj01.json", "results/regions/subj01_lh.npz",
                         check=False)
    assert proc.returncode != 0
    log = (tmp_path / "logs/validate_data/subj01.log").read_text()
    assert "mapping_streams.npy: refused: its pickle calls builtins.eval" in log
    assert not marker.exists()
    assert not (tmp_path / "results/data/subj01.json").exists()
    assert not (tmp_path / "results/regions/subj01_lh.npz").exists()


def test_genuine_mappings_load_whatever_numpy_wrote_them(tmp_path):
    """numpy 2 writes numpy._core.multiarray, numpy 1 numpy.core.multiarray; keys may be numpy
    integers and names numpy strings."""
    mapping = {0: "Unknown", np.int64(1): np.str_("V1v"), np.int32(2): "V1d"}
    new = tmp_path / "new.npy"
    np.save(new, np.array(mapping, dtype=object), allow_pickle=True)
    assert read_mapping_file(new) == {0: "Unknown", 1: "V1v", 2: "V1d"}
    old = tmp_path / "old.npy"
    arr = np.array(mapping, dtype=object)
    with open(old, "wb") as f:  # numpy 1 pickled with protocol 3, which names globals as text lines
        np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(arr))
        f.write(pickle.dumps(arr, protocol=3).replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert b"cnumpy.core.multiarray\n_reconstruct" in old.read_bytes()
    assert read_mapping_file(old) == {0: "Unknown", 1: "V1v", 2: "V1d"}


@pytest.mark.parametrize("mapping, message", [
    ({0: "Unknown", "V1v": 1}, "key 'V1v' is not an integer label: a mapping is a dict {integer label: ROI name}"),
    ({0: "Unknown", 1.5: "V1v"}, "key 1.5 is not an integer label"),
    ({0: "Unknown", 1: 7}, "label 1 maps to 7, not to an ROI name (a string)"),
    ([0, 1], "expected a pickled dict {int: name} (np.save of a dict), got an array of shape (2,)"),
])
def test_a_mapping_that_is_not_int_to_name_is_named(small_root, mapping, message):
    path = SubjectPaths(small_root, 1).mapping("streams")
    np.save(path, np.array(mapping, dtype=object), allow_pickle=True)
    with pytest.raises(DataError) as info:
        load_roi_mapping(small_root, 1, "streams")
    assert f"mapping_streams.npy: {message}" in str(info.value)


def test_a_mapping_with_text_keys_fails_validate_data_by_name(small_root):
    np.save(SubjectPaths(small_root, 1).mapping("streams"), np.array({"early": 1}, dtype=object), allow_pickle=True)
    proc = subprocess.run([sys.executable, "-m", "nsdflow.cli", "validate-data", "--data", str(small_root),
                           "--no-image-check"], capture_output=True, text=True, env=nsdflow_env())
    assert proc.returncode == 1
    assert "mapping_streams.npy: key 'early' is not an integer label" in proc.stderr
    assert "Traceback" not in proc.stderr


def _calls(tree, name):
    """Calls of ``<module>.<name>(...)`` in a parsed file."""
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and n.func.attr == name]


def _keyword(call, name):
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_nothing_else_unpickles():
    """No module loads a pickle: torch.load only with weights_only=True, np.load never with
    allow_pickle=True, no pickle.load or pandas.read_pickle outside the mapping reader."""
    offenders = []
    for path in sorted((REPO / "src").rglob("*.py")):
        tree = ast.parse(path.read_text())
        where = path.relative_to(REPO)
        for call in _calls(tree, "load"):
            owner = call.func.value.id if isinstance(call.func.value, ast.Name) else None
            if owner == "torch" and not (isinstance(_keyword(call, "weights_only"), ast.Constant)
                                         and _keyword(call, "weights_only").value is True):
                offenders.append(f"{where}:{call.lineno}: torch.load without weights_only=True")
            if owner == "np" and isinstance(_keyword(call, "allow_pickle"), ast.Constant) \
                    and _keyword(call, "allow_pickle").value is True:
                offenders.append(f"{where}:{call.lineno}: np.load with allow_pickle=True")
            if owner in ("pickle", "cloudpickle", "dill", "joblib"):
                offenders.append(f"{where}:{call.lineno}: {owner}.load")
        offenders += [f"{where}:{c.lineno}: {c.func.attr}" for c in _calls(tree, "read_pickle") + _calls(tree, "loads")
                      if isinstance(c.func.value, ast.Name) and c.func.value.id in ("pd", "pickle")]
    assert offenders == []


# ----------------------------------------------------------------------------- validate-data summaries


def _validate_cli(root, *args):
    return subprocess.run([sys.executable, "-m", "nsdflow.cli", "validate-data", "--data", str(root), "--no-image-check",
                           *args], capture_output=True, text=True, env=nsdflow_env())


def test_validate_data_writes_no_summary_when_a_later_subject_fails(tmp_path):
    root = tmp_path / "data"
    write_subject(root, "subj01", 12, 3, {"lh": 20, "rh": 22})
    write_subject(root, "subj02", 12, 3, {"lh": 20, "rh": 22})
    out = tmp_path / "summaries"
    assert _validate_cli(root, "--out", str(out)).returncode == 0
    assert sorted(p.name for p in out.iterdir()) == ["subj01.json", "subj02.json"]
    SubjectPaths(root, 2).fmri("rh").unlink()
    SubjectPaths(root, 1).mapping("streams").unlink()
    proc = _validate_cli(root, "--out", str(out))
    assert proc.returncode == 1
    # Every subject's problems at once, and no summary left that looks like this run's pass.
    assert "subj02/training_split/training_fmri/rh_training_fmri.npy: file is missing" in proc.stderr
    assert "subj01/roi_masks/mapping_streams.npy: mapping file of ROI class 'streams' is missing" in proc.stderr
    assert list(out.iterdir()) == []


# ----------------------------------------------------------------------------- images


def _png_of_zeros(path, width, height):
    """A valid black RGB PNG of any declared size in little space: each row is deflated alone
    (full flush), so every row compresses to the same bytes, repeated."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + 3 * width)  # filter byte 0, then the pixels
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    one_row = deflate.compress(row) + deflate.flush(zlib.Z_FULL_FLUSH)
    n = len(row) * height
    adler = ((n % 65521) << 16) | 1  # Adler-32 of n zero bytes
    idat = b"\x78\xda" + one_row * height + deflate.flush() + struct.pack(">I", adler)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def _png(path, width=48, height=48, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path, format="PNG")
    return path


@pytest.fixture
def png_root(tmp_path):
    """A one-subject root of 48 x 48 PNGs (6 training, 2 test images)."""
    root = tmp_path / "data"
    p = write_subject(root, "subj01", 6, 2, {"lh": 10, "rh": 12})
    for split in ("train", "test"):
        for k, f in enumerate(sorted(p.images_dir(split).iterdir())):
            _png(f, seed=k)
    return root


def _first_image(root):
    return SubjectPaths(root, 1).images_dir("train") / "train-0001_nsd-00001.png"


def test_the_bomb_png_is_valid_and_small(tmp_path):
    small = _png_of_zeros(tmp_path / "small.png", 300, 200)
    with Image.open(small) as im:
        assert im.size == (300, 200) and not np.asarray(im.convert("RGB")).any()
    assert _png_of_zeros(tmp_path / "bomb.png", 15_000, 15_000).stat().st_size < 2 * 2**20


@pytest.mark.parametrize("side, says", [
    (15_000, "image too large: it declares 225,000,000 pixels, over the limit of 4096 x 4096"),  # PIL's guard
    (5_000, "image too large: it declares 5000 x 5000 pixels, over the limit of 4096 x 4096"),  # below it
])
def test_a_decompression_bomb_is_named_by_validate_data_and_cache_images(png_root, tmp_path, side, says):
    _png_of_zeros(_first_image(png_root), side, side)
    proc = subprocess.run([sys.executable, "-m", "nsdflow.cli", "validate-data", "--data", str(png_root)],
                          capture_output=True, text=True, env=nsdflow_env())
    assert proc.returncode == 1
    assert f"train-0001_nsd-00001.png: {says}" in proc.stderr
    assert "Traceback" not in proc.stderr
    from nsdflow.features.images import build_index
    from nsdflow.io import save_table

    save_table(build_index(png_root, ["subj01"]), tmp_path / "index.csv")
    proc = subprocess.run([sys.executable, "-m", "nsdflow.cli", "cache-images", "--index", str(tmp_path / "index.csv"),
                           "--store", str(tmp_path / "c.zarr"), "--out", str(tmp_path / "c.json")],
                          capture_output=True, text=True, env=nsdflow_env())
    assert proc.returncode == 1
    assert f"train-0001_nsd-00001.png: {says}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_jpeg_under_a_png_name_fails_validation(png_root):
    path = _first_image(png_root)
    Image.open(path).convert("RGB").save(path, format="JPEG")
    with pytest.raises(DataError) as info:
        validate_subject(png_root, 1, check_images=True)
    assert "train-0001_nsd-00001.png: holds JPEG content, not PNG: the layout's images are PNG files" in str(info.value)
    from nsdflow.features.images import decode_image

    with pytest.raises(DataError, match="holds JPEG content, not PNG"):
        decode_image(path)


def test_an_odd_first_image_changes_nothing(png_root, tmp_path, caplog):
    """Without images.size the cache takes the most common size: a 16 x 8 first image is resized
    to it (and the log says so) instead of shrinking every other image to 8 pixels."""
    from nsdflow.features.images import ImageCache, build_image_cache, build_index, decode_image

    odd = _png(_first_image(png_root), width=16, height=8)
    index = build_index(png_root, ["subj01"])
    with caplog.at_level("INFO", logger="nsdflow.features.images"):
        info = build_image_cache(index, tmp_path / "c.zarr", tmp_path / "c.json", chunk=4)
    assert info["size"] == 48
    cache = ImageCache(tmp_path / "c.zarr")
    paths = dict(zip(index["nsd_id"], index["path"]))
    for row, nsd_id in enumerate(cache.nsd_ids):
        expected = decode_image(paths[nsd_id], 48)
        assert np.array_equal(cache.pixels[row], expected)
        if paths[nsd_id] != str(odd):  # every other image is cached exactly as decoded
            assert np.array_equal(expected, decode_image(paths[nsd_id]))
    assert "1 of 8 images are resized to 48 x 48 (bicubic): train-0001_nsd-00001.png (16 x 8)" in caplog.text


def test_without_images_size_a_non_square_majority_is_an_error(tmp_path):
    from nsdflow.features.images import cache_side

    assert cache_side([(16, 8), (48, 48), (32, 32), (32, 32), None]) == 32
    assert cache_side([(16, 16), (48, 48)]) == 48  # a tie goes to the larger
    with pytest.raises(ValueError, match="images.size: most images are 500 x 375, not square; set images.size"):
        cache_side([(500, 375), (500, 375), (425, 425)])


# ----------------------------------------------------------------------------- submission zips


def _npy_header(shape) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _deflated(segments):
    """Raw deflate of ``segments`` ((block, times) each, concatenated) with its CRC-32 and size:
    each block is deflated once and ends in a full flush, so its bytes repeat ``times`` times."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    out, crc, size = [], 0, 0
    for block, times in segments:
        out.append((deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)) * times)
        for _ in range(times):
            crc = zlib.crc32(block, crc)
        size += len(block) * times
    out.append(deflate.flush())
    return b"".join(out), crc, size


def _zip_of_one(path, name, data, crc, size, declared=None):
    """A zip of one deflated entry whose directory declares ``declared`` bytes (``size``: honest)."""
    name = name.encode()
    declared = size if declared is None else declared
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(data), declared, len(name), 0)
    central = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, crc, len(data), declared,
                          len(name), 0, 0, 0, 0, 0, 0)
    directory = central + name
    offset = len(local) + len(name) + len(data)
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(directory), offset, 0)
    path.write_bytes(local + name + data + directory + end)
    return path


MiB = 1 << 20
ZERO_MiB = bytes(MiB)


def _bomb(path, kind):
    """subj01/lh_pred_test.npy, a (4, 30) float32 array for the ``root`` fixture, as a 2 MB zip entry:
    trailing: its valid header and array, then 2 GiB of zeros, all declared;
    lying: the same 2 GiB carried, but only the header and array declared;
    huge: a header declaring a (4, 2**27) float32 array, 2 GiB of zeros, all declared."""
    name = "subj01/lh_pred_test.npy"
    if kind == "huge":
        data, crc, size = _deflated([(_npy_header((4, 2**27)), 1), (ZERO_MiB, 2048)])
        return _zip_of_one(path, name, data, crc, size)
    data, crc, size = _deflated([(_npy_header((4, 30)), 1), (bytes(480), 1), (ZERO_MiB, 2048)])
    if kind == "lying":
        crc = zlib.crc32(bytes(480), zlib.crc32(_npy_header((4, 30))))
        return _zip_of_one(path, name, data, crc, size, declared=len(_npy_header((4, 30))) + 480)
    return _zip_of_one(path, name, data, crc, size)


def test_the_bomb_zips_are_valid_zips(tmp_path):
    """The same construction, with 3 MiB instead of 2 GiB, reads back through zipfile, CRC checked."""
    data, crc, size = _deflated([(_npy_header((4, 30)), 1), (bytes(480), 1), (ZERO_MiB, 3)])
    path = _zip_of_one(tmp_path / "small.zip", "subj01/lh_pred_test.npy", data, crc, size)
    with zipfile.ZipFile(path) as zf:
        content = zf.read("subj01/lh_pred_test.npy")
    assert content == _npy_header((4, 30)) + bytes(480 + 3 * MiB)
    assert (tmp_path / "small.zip").stat().st_size < 10_000


@pytest.fixture
def sub_root(tmp_path):
    r = tmp_path / "data"
    write_subject(r, "subj01", 10, 4, {"lh": 30, "rh": 35})
    return r


CHECK_IN_A_CHILD = """
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))  # a regression fails here, not the machine
from nsdflow.submission.archive import check_submission
t0 = time.process_time()
report = check_submission(sys.argv[1], sys.argv[2])
# VmHWM, the peak resident memory of this process's own image: ru_maxrss would also count the
# parent's (pytest's) resident memory at fork, which Linux carries across exec.
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"seconds": time.process_time() - t0, "errors": report.errors, "peak_mb": peak_kb / 1024}))
"""


@pytest.mark.parametrize("kind, says", [
    ("trailing", "subj01/lh_pred_test.npy: declares 2,147,484,256 bytes: 2,147,483,648 bytes after its (4, 30) "
                 "float32 array; refused unread"),
    ("lying", "subj01/lh_pred_test.npy: carries 2,"),
    ("huge", "subj01/lh_pred_test.npy: shape (4, 134217728), expected (4, 30)"),
])
def test_a_zip_bomb_is_refused_in_little_memory_and_time(sub_root, tmp_path, kind, says):
    path = _bomb(tmp_path / "bomb.zip", kind)
    assert path.stat().st_size < 2.5 * MiB
    proc = subprocess.run([sys.executable, "-c", CHECK_IN_A_CHILD, str(path), str(sub_root)], capture_output=True,
                          text=True, env=nsdflow_env())
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert any(says in e for e in result["errors"]), result["errors"]
    assert result["peak_mb"] < 200, result
    assert result["seconds"] < 1.0, result


def test_twenty_thousand_junk_entries_take_well_under_a_second(sub_root, tmp_path):
    from nsdflow.submission.archive import assemble_submission

    rng = np.random.default_rng(0)
    path = tmp_path / "junk.zip"
    assemble_submission({("subj01", h): rng.normal(size=(4, n)).astype(np.float32) for h, n in (("lh", 30), ("rh", 35))},
                        path)
    with zipfile.ZipFile(path, "a") as zf:
        for k in range(20_000):
            zf.writestr(f"junk/{k:05d}.txt", b"")
    # In a fresh process, in CPU seconds: neither the test session's heap nor other jobs count.
    proc = subprocess.run([sys.executable, "-c", CHECK_IN_A_CHILD, str(path), str(sub_root)], capture_output=True,
                          text=True, env=nsdflow_env())
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["errors"] == []
    assert result["seconds"] < 0.5, result  # 4 s when each name was counted with list.count


def test_a_zip_declaring_too_many_entries_is_refused_unread(sub_root, tmp_path):
    from nsdflow.submission.archive import check_submission

    data, crc, size = _deflated([(b"x", 1)])
    path = _zip_of_one(tmp_path / "many.zip", "x", data, crc, size)
    raw = bytearray(path.read_bytes())
    raw[-12:-8] = struct.pack("<HH", 0xFFFF, 0xFFFF)  # the entry counts of the end record
    path.write_bytes(bytes(raw))
    report = check_submission(path, sub_root)
    assert report.errors == [f"{path}: declares 65,535 or more entries (a submission has 24); refused without "
                             "reading them"]


# ----------------------------------------------------------------------------- configs

TINY = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())


def _problems_of(edit):
    import copy

    from nsdflow.config import config_problems

    config = copy.deepcopy(TINY)
    edit(config)
    return config_problems(config)


@pytest.mark.parametrize("edit, expected", [
    (lambda c: c["models"].update({1: c["models"].pop("clip_ridge")}),
     "models: the key 1 is an integer, not a string; keys are names: write it in quotes ('1') or rename it"),
    (lambda c: c["data"].update({5: "x"}), "data: the key 5 is an integer, not a string"),
    (lambda c: c.update({True: 1}), "(top level): the key True is a boolean, not a string"),
    (lambda c: c["models"]["alex_ridge"].update(params={None: 1}),
     "models.alex_ridge.params: the key None is null, not a string"),
])
def test_a_key_that_is_not_a_string_is_named(edit, expected):
    found = _problems_of(edit)
    assert any(expected in p for p in found), found


def test_snakemake_names_a_key_that_is_not_a_string(tmp_path):
    text = (REPO / "tests/configs/tiny.yaml").read_text().replace("  alex_ridge:", "  1:").replace(
        "model: alex_ridge", "model: clip_ridge")
    (tmp_path / "config.yaml").write_text(text)
    proc = run_snakemake(tmp_path, "--dry-run", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "models: the key 1 is an integer, not a string" in out
    assert "Traceback" not in out


@pytest.mark.parametrize("section", ["models", "backbones", "ensembles"])
@pytest.mark.parametrize("name, means", [(".", "this folder"), ("..", "the folder above")])
def test_names_dot_and_dot_dot_are_refused(section, name, means):
    def edit(c):
        if section == "ensembles":
            c["ensembles"] = {name: {"models": ["alex_ridge", "clip_ridge"]}}
        else:
            c[section][name] = next(iter(c[section].values()))

    assert f"{section}: the name {name!r} is not allowed: it becomes a folder name, where it means {means}" \
           in " ".join(_problems_of(edit))


def test_names_with_dots_are_still_allowed():
    assert _problems_of(lambda c: c["models"].update({"v1.2-x_y": c["models"]["alex_ridge"], ".hidden": {
        "readout": "ridge", "features": ["alex/features.5"]}})) == []


def test_cmap_is_a_colour_map_matplotlib_knows():
    import matplotlib

    from nsdflow.config import _colour_map_problem

    assert [m for m in matplotlib.colormaps if _colour_map_problem({"plots": {"brain_maps": {"cmap": m}}})] == []
    found = _problems_of(lambda c: c.update(plots={"brain_maps": {"cmap": "infern"}}))
    assert len(found) == 1
    assert found[0].startswith("plots.brain_maps.cmap: 'infern' is not a matplotlib colour map (did you mean "
                               "'inferno'?); known: Accent, afmhot, autumn")
    assert "(each also reversed: <name>_r)" in found[0]
    assert _problems_of(lambda c: c.update(plots={"brain_maps": {"cmap": "$(touch PWNED)"}}))[0].startswith(
        "plots.brain_maps.cmap: '$(touch PWNED)' is not a matplotlib colour map; known: ")


# ----------------------------------------------------------------------------- shell quoting

EVIL = "da ta $(touch PWNED) `touch PWNED`; a|b&c 'q' \"d\" *#<>\\ PWNED"


def _hostile_config(tmp_path):
    """tiny.yaml with shell metacharacters and spaces in every string-valued key (names keep to
    what the schema allows), over a data root whose path has them too. Returns (config, values)."""
    evil = tmp_path / EVIL
    root, withheld = evil / "root $(touch PWNED)", evil / "with held;touch PWNED"
    write_subject(root, "subj01", 12, 3, {"lh": 20, "rh": 22})
    (withheld / "subj01").mkdir(parents=True)
    hdf5, checkpoint = evil / "stimuli $(touch PWNED).hdf5", evil / "alex net `touch PWNED`.pt"
    hdf5.write_bytes(b"not read by a dry run")
    checkpoint.write_bytes(b"not read by a dry run")
    values = {"root": str(root), "withheld": str(withheld), "hdf5": str(hdf5), "dataset": "img Brick $(touch PWNED)",
              "model": "net '$(touch PWNED)'", "checkpoint": str(checkpoint), "tag": "tag; touch PWNED",
              "cache_dir": str(evil / "hf cache"), "layer": "features.5 $(touch PWNED)"}
    values["feature"] = f"a.l-e_x/{values['layer']}"
    alex = {"kind": "alexnet", "model": values["model"], "weights": {"init": "checkpoint", "path": values["checkpoint"]},
            "chunk": 32, "layers": {"features.5": {"pool": "avg2"}, values["layer"]: {"pool": "grid"}}}
    clip = {**TINY["backbones"]["clip"], "weights": {"init": "random", "seed": 0, "tag": values["tag"],
                                                      "cache_dir": values["cache_dir"]}}
    config = {
        **TINY,
        "data": {"root": values["root"], "withheld": values["withheld"], "check_images": False},
        "images": {"source": "hdf5", "hdf5": values["hdf5"], "hdf5_dataset": values["dataset"]},
        "backbones": {"a.l-e_x": alex, "c_l.ip": clip},
        "models": {"m.1-a_b": {"readout": "ridge", "features": ["a.l-e_x/features.5", values["feature"]]},
                   "pca.lin": {"readout": "pca_linear", "features": ["c_l.ip/image"],
                               "pca": {"n_components": 4, "batch_size": 8}},
                   "fb.n-et": {"readout": "bottleneck", "features": [values["feature"]],  # pretrain, shared PCA
                               "pca": {"n_components": 4, "batch_size": 8, "scope": "all"}},
                   "tr.a-n_s": {"readout": "transformer", "features": [values["feature"]],  # attention maps
                                "params": {"queries": "floc-places"}}},
        "ensembles": {"en.s-1": {"models": ["m.1-a_b", "pca.lin"], "method": "weighted"}},
        "submission": {"model": "en.s-1"},
        "plots": {"brain_maps": {"cmap": "RdBu_r", "vmax": 0.5}},
    }
    return config, values


def _hostile(text: str) -> bool:
    """Whether ``text`` holds a hostile value or a piece of one (file names made of a value keep
    only its letters, digits and '._-': those are not)."""
    return "PWNED" in text and bool(set(text) & set(" $`;|&'\"*#<>\\"))


def _json_strings(obj):
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in [k, *_json_strings(v)]]
    if isinstance(obj, list):
        return [s for v in obj for s in _json_strings(v)]
    return [obj] if isinstance(obj, str) else []


def test_config_strings_reach_no_shell(tmp_path):
    """Every rule's command, as Snakemake prints it for a config of metacharacters and spaces,
    keeps each value one argument, and bash running it (with a stand-in nsdflow that records its
    arguments) passes each value verbatim and runs nothing."""
    from nsdflow import results

    config, values = _hostile_config(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    out = run_snakemake(work, "--dry-run", "--printshellcmds").stdout
    commands = [line.split(": ", 1)[1] for line in out.splitlines()
                if line.startswith("Shell command: ") and line != "Shell command: None"]  # rule all has none
    rules = {line.split()[-1].rstrip(":") for line in out.splitlines() if line.startswith(("rule ", "localrule "))}
    assert set(results.OUTPUTS) - {"demo"} <= rules  # every rule but the demo's is scanned
    hostile, seen = set(values.values()), set()
    for command in commands:
        for token in (t for t in shlex.split(command) if _hostile(t)):
            strings = _json_strings(json.loads(token)) if token[:1] in "{[" else [token]
            for s in filter(_hostile, strings):
                assert s in hostile, f"{s!r} is a fragment of a value in: {command}"
                seen.add(s)
    assert seen == hostile

    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "nsdflow").write_text('#!/bin/sh\nprintf \'%s\\0\' "$@" > "$ARGV_FILE"\n')
    (stub / "nsdflow").chmod(0o755)
    scratch = tmp_path / "scratch"
    env = {**nsdflow_env(), "PATH": f"{stub}{os.pathsep}{os.environ['PATH']}"}
    for k, command in enumerate(commands):
        tokens = shlex.split(command)
        end = tokens.index(">")
        (scratch / tokens[end + 1]).parent.mkdir(parents=True, exist_ok=True)
        argv = tmp_path / f"argv{k}"
        proc = subprocess.run(["bash", "-c", f"set -euo pipefail; {command}"], cwd=scratch, capture_output=True,
                              text=True, env={**env, "ARGV_FILE": str(argv)})
        assert proc.returncode == 0, (command, proc.stderr)
        assert argv.read_bytes().split(b"\0")[:-1] == [t.encode() for t in tokens[1:end]], command
    assert not [p for p in tmp_path.rglob("*PWNED") if p.name == "PWNED"]


# ----------------------------------------------------------------------------- flushed before finished


@pytest.fixture
def fsyncs(monkeypatch):
    """The paths the test fsyncs, in order (read from /proc)."""
    events = []
    real = os.fsync

    def fsync(fd):
        events.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return events


def test_atomic_path_syncs_the_file_before_the_rename_and_the_folder_after(tmp_path, fsyncs, monkeypatch):
    from nsdflow.io import atomic_write_text

    renames = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (renames.append(len(fsyncs)), real_replace(a, b)))
    atomic_write_text(tmp_path / "out.txt", "done")
    assert (tmp_path / "out.txt").read_text() == "done"
    assert len(fsyncs) == 2 and renames == [1]  # the file, the rename, then the folder
    assert os.path.basename(fsyncs[0]).startswith(".out.txt.") and fsyncs[1] == str(tmp_path)


def test_a_chunk_is_marked_done_only_after_its_files_are_synced(tmp_path, monkeypatch):
    """What both writers (the image cache, feature extraction) call after writing a chunk: every
    file of that row chunk, in every array, is synced before the marker exists."""
    from nsdflow.features import chunks

    store = tmp_path / "s.zarr"

    def create(group):
        group.create_array("layers/x", shape=(10, 6), chunks=(4, 4), dtype="float32", fill_value=np.nan)
        group.create_array("digests", shape=(10,), chunks=(4,), dtype="uint64", fill_value=0)
        group.create_array("nsd_ids", data=np.arange(10), chunks=(10,))

    with chunks.open_store(store, {"spec": 1}, create) as (group, _):
        group["layers/x"][:] = np.ones((10, 6), np.float32)
        group["digests"][:] = np.arange(1, 11, dtype=np.uint64)
        marker = chunks.done_dir(store) / "1"
        touched = []
        monkeypatch.setattr(os, "fsync", lambda fd, real=os.fsync: (
            touched.append((os.readlink(f"/proc/self/fd/{fd}"), marker.exists())), real(fd)))
        chunks.mark_done(store, 1)
    synced = [p for p, _ in touched]
    row_chunk_1 = {str(store / "layers/x/c/1/0"), str(store / "layers/x/c/1/1"), str(store / "digests/c/1")}
    assert row_chunk_1 <= set(synced)
    assert not any("/c/0" in p or "/c/2" in p for p in synced)
    assert not any(done for _, done in touched)
    assert marker.exists()
