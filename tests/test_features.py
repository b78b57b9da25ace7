"""Backbones, pooling, the image cache and the feature store (random weights, tiny inputs, CPU)."""

import numpy as np
import pytest
import torch

from nsdflow.data import DataError
from nsdflow.features.backbones import BackboneError, build_backbone
from nsdflow.features.extract import extract_features
from nsdflow.features.pooling import PoolingError, pool_output
from nsdflow.features.store import FeatureStore
from nsdflow.images import ImageCache, build_image_cache, build_index, decode_image

ALEX = {"kind": "alexnet", "weights": {"init": "random", "seed": 0}, "chunk": 16, "batch_size": 8,
        "layers": {"features.5": {"pool": "avg2"}, "classifier.5": {"pool": "full"}}}


# ----------------------------------------------------------------------------- pooling


def test_pooling_layouts():
    tokens = torch.randn(2, 1 + 16, 8)
    assert pool_output(tokens, "tokens", "cls").shape == (2, 8)
    assert torch.allclose(pool_output(tokens, "tokens", "mean"), tokens[:, 1:].mean(1))
    assert pool_output(tokens, "tokens", "avg2").shape == (2, 8 * 4)
    assert pool_output(tokens, "tokens", "full").shape == (2, 17 * 8)
    fmap = torch.randn(2, 3, 6, 6)
    assert pool_output(fmap, "map", "avg3").shape == (2, 27)
    assert torch.allclose(pool_output(fmap, "map", "avg1"), fmap.mean((2, 3)))
    assert pool_output(torch.randn(2, 5), "vector", "full").shape == (2, 5)
    with pytest.raises(PoolingError, match="needs a token layer"):
        pool_output(fmap, "map", "cls")
    with pytest.raises(PoolingError, match="unknown pooling 'max'"):
        pool_output(fmap, "map", "max")


# ----------------------------------------------------------------------------- backbones


@pytest.mark.parametrize("spec, layers, dims", [
    ({"kind": "alexnet"}, {"features.2": "avg2", "classifier.6": "full"}, [64 * 4, 1000]),
    ({"kind": "clip", "model": "ViT-B-32"}, {"image": "full", "blocks.3": "cls"}, [512, 768]),
    ({"kind": "sam", "model": "vit_b", "input_size": 64}, {"neck": "avg2", "blocks.1": "mean"}, [256 * 4, 768]),
])
def test_backbones_random_init(spec, layers, dims):
    spec = {**spec, "weights": {"init": "random", "seed": 1}, "layers": {k: {"pool": v} for k, v in layers.items()}}
    b = build_backbone("b", spec)
    x = torch.randint(0, 255, (2, 40, 40, 3), dtype=torch.uint8)
    with torch.inference_mode():
        out = b(x, list(layers))
    got = [pool_output(out[k].tensor, out[k].layout, p).shape[1] for k, p in layers.items()]
    assert got == dims
    # The same seed gives the same weights.
    b2 = build_backbone("b", spec)
    with torch.inference_mode():
        assert torch.equal(b2(x, list(layers))[list(layers)[0]].tensor, out[list(layers)[0]].tensor)


def test_unknown_layer_lists_valid_ones():
    with pytest.raises(BackboneError, match=r"has no layer 'features\.99'; valid layers: features\.0"):
        build_backbone("alex", {**ALEX, "layers": {"features.99": {"pool": "full"}}})


def test_unknown_kind_and_missing_checkpoint(tmp_path):
    with pytest.raises(BackboneError, match="unknown kind 'vgg'"):
        build_backbone("x", {"kind": "vgg", "weights": {"init": "random"}, "layers": {}})
    with pytest.raises(BackboneError, match="does not exist .*never downloaded"):
        build_backbone("x", {**ALEX, "weights": {"init": "checkpoint", "path": str(tmp_path / "none.pth")}})


def test_checkpoint_roundtrip_and_wrong_architecture(tmp_path):
    ref = build_backbone("a", ALEX)
    torch.save(ref.model.state_dict(), tmp_path / "alexnet.pth")
    loaded = build_backbone("a", {**ALEX, "weights": {"init": "checkpoint", "path": str(tmp_path / "alexnet.pth")}})
    x = torch.randint(0, 255, (1, 32, 32, 3), dtype=torch.uint8)
    with torch.inference_mode():
        assert torch.equal(ref(x, ["classifier.5"])["classifier.5"].tensor, loaded(x, ["classifier.5"])["classifier.5"].tensor)
    assert loaded.weights_identity()["sha256"]
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(BackboneError, match="does not hold AlexNet weights"):
        build_backbone("a", {**ALEX, "weights": {"init": "checkpoint", "path": str(tmp_path / "other.pth")}})


# ----------------------------------------------------------------------------- images


def test_decode_converts_modes_and_names_corrupt_files(tmp_path):
    from PIL import Image

    Image.new("L", (8, 8), 100).save(tmp_path / "gray.png")
    Image.new("RGBA", (8, 8), (10, 20, 30, 0)).save(tmp_path / "rgba.png")
    assert decode_image(tmp_path / "gray.png").shape == (8, 8, 3)
    assert decode_image(tmp_path / "rgba.png")[0, 0].tolist() == [255, 255, 255]  # transparent -> white
    assert decode_image(tmp_path / "gray.png", size=16).shape == (16, 16, 3)
    good = (tmp_path / "gray.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"cut\.png: cannot decode the image"):
        decode_image(tmp_path / "cut.png")


@pytest.fixture(scope="module")
def image_cache(tiny_demo, tmp_path_factory):
    root, _, manifest = tiny_demo
    out = tmp_path_factory.mktemp("cache")
    index = build_index(root, list(manifest["subjects"]))
    info = build_image_cache(index, out / "images.zarr", out / "images.json", chunk=16, workers=2)
    return out, index, info


def test_image_cache_holds_each_unique_image_once(image_cache):
    out, index, info = image_cache
    cache = ImageCache(out / "images.zarr")
    assert len(cache) == index["nsd_id"].nunique() == info["n_images"] < len(index)
    row = index.iloc[5]
    assert np.array_equal(cache.pixels[int(cache.rows([row.nsd_id])[0])], decode_image(row.path))


# ----------------------------------------------------------------------------- extraction


def _extract(image_cache, tmp_path, spec=ALEX, name="alex"):
    out, _, _ = image_cache
    return extract_features(name, spec, out / "images.zarr", tmp_path / f"{name}.zarr", tmp_path / f"{name}.json",
                            threads=2)


def test_stored_features_equal_the_backbone_output(image_cache, tmp_path):
    out, index, _ = image_cache
    info = _extract(image_cache, tmp_path)
    cache, store = ImageCache(out / "images.zarr"), FeatureStore(tmp_path / "alex.zarr")
    ids = cache.nsd_ids[[0, 17, 33]]
    b = build_backbone("alex", ALEX)
    with torch.inference_mode():
        o = b(torch.from_numpy(np.asarray(cache.pixels[[0, 17, 33]])), ["features.5"])["features.5"]
        direct = pool_output(o.tensor, o.layout, "avg2").numpy()
    np.testing.assert_allclose(store.read("features.5", ids), direct, rtol=2e-3, atol=2e-3)  # float16 storage
    assert info["layers"]["classifier.5"]["shape"] == [len(cache), 4096]


def test_resume_extracts_only_missing_chunks(image_cache, tmp_path):
    _extract(image_cache, tmp_path)
    before = FeatureStore(tmp_path / "alex.zarr").read("features.5", FeatureStore(tmp_path / "alex.zarr").nsd_ids)
    (tmp_path / "alex.zarr" / "done" / "1").unlink()  # as if killed while writing chunk 1
    with pytest.raises(RuntimeError, match="incomplete"):
        FeatureStore(tmp_path / "alex.zarr")
    info = _extract(image_cache, tmp_path)
    assert info["extracted_images"] == 16
    after = FeatureStore(tmp_path / "alex.zarr").read("features.5", FeatureStore(tmp_path / "alex.zarr").nsd_ids)
    np.testing.assert_array_equal(before, after)


def test_changed_settings_reextract(image_cache, tmp_path):
    n = _extract(image_cache, tmp_path)["n_images"]
    same = _extract(image_cache, tmp_path)
    assert same["extracted_images"] == 0
    repooled = _extract(image_cache, tmp_path, {**ALEX, "layers": {"features.5": {"pool": "avg1"}}})
    assert repooled["extracted_images"] == n and repooled["layers"]["features.5"]["shape"][1] == 192
    reseeded = _extract(image_cache, tmp_path, {**ALEX, "weights": {"init": "random", "seed": 7},
                                                "layers": {"features.5": {"pool": "avg1"}}})
    assert reseeded["extracted_images"] == n  # other weights are never reused
    assert FeatureStore(tmp_path / "alex.zarr").spec["weights"] == {"init": "random", "seed": 7}
