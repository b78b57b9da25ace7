"""The uint8 image cache: once per unique NSD id, worker processes, resumable, PNG or NSD's HDF5."""

import numpy as np
import pytest

from nsdflow.data.layout import SubjectPaths, format_image_name
from nsdflow.data.read import DataError
from nsdflow.features import images as images_mod
from nsdflow.features.chunks import (
    StoreBusy,
    done_chunks,
    open_store,
    remove_store,
    shard_chunks,
)
from nsdflow.features.images import (
    ImageCache,
    build_image_cache,
    build_index,
    decode_image,
)


@pytest.fixture(scope="module")
def demo_index(tiny_demo):
    root, _, manifest = tiny_demo
    return build_index(root, list(manifest["subjects"]))


def test_each_unique_image_is_cached_once(demo_index, tmp_path):
    info = build_image_cache(demo_index, tmp_path / "c.zarr", tmp_path / "c.json", chunk=16)
    cache = ImageCache(tmp_path / "c.zarr")
    shared = demo_index.groupby("nsd_id")["subject"].nunique()
    shared_id = int(shared[shared > 1].index[0])  # an image that both subjects saw
    assert len(cache) == demo_index["nsd_id"].nunique() == info["n_images"] < len(demo_index)
    assert np.all(np.diff(cache.nsd_ids) > 0)
    assert (cache.nsd_ids == shared_id).sum() == 1
    for path in demo_index.query("nsd_id == @shared_id")["path"]:  # both subjects' files show that one row
        assert np.array_equal(cache.pixels[int(cache.rows([shared_id])[0])], decode_image(path))
    with pytest.raises(KeyError, match="lacks NSD ids"):
        cache.rows([10**6])


def test_worker_processes_write_the_same_cache(demo_index, tmp_path, monkeypatch):
    serial = build_image_cache(demo_index, tmp_path / "a.zarr", tmp_path / "a.json", chunk=8, workers=1)
    monkeypatch.setattr(images_mod, "MIN_IMAGES_PER_WORKER", 1)  # use processes even for a few images
    parallel = build_image_cache(demo_index, tmp_path / "b.zarr", tmp_path / "b.json", chunk=8, workers=2)
    assert serial["workers"] == 1 and parallel["workers"] == 2
    np.testing.assert_array_equal(ImageCache(tmp_path / "a.zarr").pixels[:], ImageCache(tmp_path / "b.zarr").pixels[:])


def test_resume_rewrites_only_chunks_not_done(demo_index, tmp_path):
    store = tmp_path / "c.zarr"
    build_image_cache(demo_index, store, tmp_path / "c.json", chunk=16)
    reference = ImageCache(store).pixels[:]
    import zarr

    zarr.open_array(store / "pixels", mode="r+")[16:32] = 0  # as if killed while writing chunk 1
    (store / "done" / "1").unlink()
    with pytest.raises(RuntimeError, match="incomplete"):
        ImageCache(store)
    info = build_image_cache(demo_index, store, tmp_path / "c.json", chunk=16)
    assert info["cached_images"] == 16
    np.testing.assert_array_equal(ImageCache(store).pixels[:], reference)
    # Other settings rebuild the store instead of mixing sizes.
    info = build_image_cache(demo_index, store, tmp_path / "c.json", chunk=16, size=32)
    assert info["cached_images"] == info["n_images"] and ImageCache(store).pixels.shape[1:] == (32, 32, 3)


# ----------------------------------------------------------------------------- NSD's HDF5


def _hdf5_root(tmp_path, base: int, n_brick: int = 30):
    """A data root whose PNGs are rows of a synthetic nsd_stimuli.hdf5 (imgBrick layout)."""
    import h5py
    from PIL import Image

    rng = np.random.default_rng(0)
    brick = rng.integers(0, 256, (n_brick, 20, 20, 3), dtype=np.uint8)
    with h5py.File(tmp_path / "nsd_stimuli.hdf5", "w") as f:
        f.create_dataset("imgBrick", data=brick, chunks=(1, 20, 20, 3))
    ids = {"subj01": {"train": [3, 4, 5, 9, 20], "test": [25]}, "subj02": {"train": [4, 5, 6, 7, 11], "test": [28]}}
    for subject, splits in ids.items():
        for split, nsd in splits.items():
            folder = SubjectPaths(tmp_path / "root", subject).images_dir(split)
            folder.mkdir(parents=True)
            for k, nsd_id in enumerate(nsd, 1):
                Image.fromarray(brick[nsd_id - base]).save(folder / format_image_name(split, k, nsd_id))
    return tmp_path / "root", tmp_path / "nsd_stimuli.hdf5", brick


@pytest.mark.parametrize("base", [0, 1])
def test_hdf5_source_matches_the_pngs_and_finds_the_index_base(tmp_path, base):
    root, h5, brick = _hdf5_root(tmp_path, base)
    index = build_index(root, ["subj01", "subj02"])
    png = build_image_cache(index, tmp_path / "png.zarr", tmp_path / "png.json", chunk=4)
    info = build_image_cache(index, tmp_path / "h5.zarr", tmp_path / "h5.json", chunk=4, source="hdf5", hdf5=h5)
    assert info["index_base"] == base and info["source"] == "hdf5" and png["source"] == "png"
    from_h5, from_png = ImageCache(tmp_path / "h5.zarr"), ImageCache(tmp_path / "png.zarr")
    np.testing.assert_array_equal(from_h5.pixels[:], from_png.pixels[:])
    np.testing.assert_array_equal(from_h5.pixels[:], brick[from_h5.nsd_ids - base])
    # The wrong base, given explicitly, reads other rows (which is why auto checks against the PNGs).
    wrong = build_image_cache(index, tmp_path / "w.zarr", tmp_path / "w.json", chunk=4, source="hdf5", hdf5=h5,
                              index_base=1 - base)
    assert not np.array_equal(ImageCache(tmp_path / "w.zarr").pixels[:], from_png.pixels[:])
    assert wrong["index_base"] == 1 - base


def test_hdf5_errors_name_the_file(tmp_path):
    import h5py

    root, h5, _ = _hdf5_root(tmp_path, 0)
    index = build_index(root, ["subj01", "subj02"])
    other = tmp_path / "other.hdf5"
    with h5py.File(other, "w") as f:
        f.create_dataset("imgBrick", data=np.zeros((40, 20, 20, 3), np.uint8))
        f.create_dataset("flat", data=np.zeros((40, 20), np.uint8))
    with pytest.raises(DataError, match=r"other\.hdf5: its images do not match the data root's PNGs"):
        build_image_cache(index, tmp_path / "x.zarr", tmp_path / "x.json", source="hdf5", hdf5=other)
    with pytest.raises(DataError, match=r"has no dataset 'stimuli'"):
        build_image_cache(index, tmp_path / "x.zarr", tmp_path / "x.json", source="hdf5", hdf5=h5,
                          hdf5_dataset="stimuli")
    with pytest.raises(DataError, match=r"expected \(N, H, W, 3\) uint8"):
        build_image_cache(index, tmp_path / "x.zarr", tmp_path / "x.json", source="hdf5", hdf5=other,
                          hdf5_dataset="flat", index_base=0)
    with pytest.raises(DataError, match=r"NSD ids \[28\] \(from 0\) are outside it"):
        small = tmp_path / "small.hdf5"
        with h5py.File(small, "w") as f:
            f.create_dataset("imgBrick", data=np.zeros((26, 20, 20, 3), np.uint8))
        build_image_cache(index, tmp_path / "x.zarr", tmp_path / "x.json", source="hdf5", hdf5=small, index_base=0)


# ----------------------------------------------------------------------------- chunked stores


def test_shard_chunks_cover_every_chunk_once():
    for n, shards in [(10, 1), (10, 3), (7, 7), (3, 5)]:
        ranges = [shard_chunks(n, k, shards) for k in range(shards)]
        assert [c for r in ranges for c in r] == list(range(n))
        assert max(len(r) for r in ranges) - min(len(r) for r in ranges) <= 1


def test_a_store_being_written_is_never_rebuilt_under_its_writer(tmp_path):
    store = tmp_path / "s.zarr"

    def create(group):
        group.create_array("nsd_ids", data=np.arange(4), chunks=(4,))

    with open_store(store, {"v": 1}, create) as (_, resumed):
        assert not resumed
        with open_store(store, {"v": 1}, create) as (_, resumed_too):  # a second shard: same settings
            assert resumed_too
        with pytest.raises(StoreBusy, match=r"s\.zarr is being written by another job with other settings \(v\)"):
            with open_store(store, {"v": 2}, create, wait=0.5):
                pass
    (store / "done" / "0").touch()
    with open_store(store, {"v": 2}, create) as (_, resumed):  # nobody writes it now: rebuilt afresh
        assert not resumed and done_chunks(store) == set()
    remove_store(store)
    assert not store.exists() and not list(tmp_path.glob(".s.zarr.deleting-*"))
