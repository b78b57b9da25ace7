"""Feature extraction: equal to each backbone's own output, resumable after SIGKILL, sharded, never mixed.

Random weights and tiny inputs on the CPU; the code path is the GPU one with device=cpu.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import nsdflow_env

from nsdflow.features.backbones import (
    BackboneError,
    build_backbone,
    convert_dinov2_state,
)
from nsdflow.features.chunks import StoreBusy, done_chunks, stale_rows
from nsdflow.features.combine import combine_features
from nsdflow.features.extract import LayerRunner, extract_features
from nsdflow.features.images import ImageCache, build_image_cache, build_index
from nsdflow.features.pooling import PoolingError, pool_output
from nsdflow.features.store import FeatureStore

ALEX = {"kind": "alexnet", "weights": {"init": "random", "seed": 0}, "chunk": 8, "batch_size": 4,
        "layers": {"features.2": {"pool": "avg2"}, "features.5": {"pool": "avg1"}}}
DINO_S = "vit_small_patch14_dinov2"  # the ViT-B/14 code path with a smaller, faster model


@pytest.fixture(scope="module")
def cache(tiny_demo, tmp_path_factory):
    """The tiny demo's image cache (52 unique images of 2 subjects, 48 px): (store path, index)."""
    root, _, manifest = tiny_demo
    out = tmp_path_factory.mktemp("images")
    index = build_index(root, list(manifest["subjects"]))
    build_image_cache(index, out / "images.zarr", out / "images.json", chunk=16)
    return out / "images.zarr", index


@pytest.fixture(scope="module")
def few(cache, tmp_path_factory):
    """A cache of 8 of those images, for the slower networks (SAM costs 0.4 s per image on 2 cores)."""
    _, index = cache
    out = tmp_path_factory.mktemp("few")
    subset = index[index["nsd_id"].isin(np.sort(index["nsd_id"].unique())[:8])]
    build_image_cache(subset, out / "images.zarr", out / "images.json", chunk=8)
    return out / "images.zarr", subset


def _extract(cache, tmp_path, spec=ALEX, name="alex", store=None, **kw):
    store = store or tmp_path / f"{name}.zarr"
    manifest = tmp_path / f"{name}.{kw.get('shard', 0)}-of-{kw.get('shards', 1)}.json"
    return extract_features(name, spec, cache[0], store, manifest, device="cpu", threads=2, **kw)


def _all(store, layer):
    fs = FeatureStore(store)
    return fs.read(layer, fs.nsd_ids)


# ----------------------------------------------------------------------------- equal to the backbone's own output


def _native(kind, backbone, x, layer):
    """The layer as the model's own code computes it (not through nsdflow's hooks)."""
    m = backbone.model
    if kind == "alexnet":
        return m.features[: int(layer.split(".")[1]) + 1](x)
    if kind == "clip":
        return m(x)  # open_clip's image tower: the image embedding (encode_image without normalising)
    if kind == "sam":
        return m(x)  # the image encoder's output, the neck
    if kind == "dinov2":
        return m.forward_features(x)[:, 0]  # the class token after the final norm


@pytest.mark.parametrize("spec, layer, pool", [
    ({"kind": "alexnet"}, "features.2", "avg2"),
    ({"kind": "clip", "model": "ViT-B-32", "input_size": 64}, "image", "full"),
    ({"kind": "sam", "model": "vit_b", "input_size": 64}, "neck", "avg2"),  # windows pad 4x4 tokens to 14x14
    ({"kind": "dinov2", "model": DINO_S, "input_size": 56}, "image", "full"),
], ids=["alexnet", "clip", "sam", "dinov2"])
def test_cached_features_equal_the_backbones_own_output(few, tmp_path, spec, layer, pool, monkeypatch):
    from nsdflow.features import extract

    spec = {**spec, "weights": {"init": "random", "seed": 3}, "layers": {layer: {"pool": pool}}, "chunk": 3,
            "batch_size": 2}
    backbone = build_backbone("b", spec)
    monkeypatch.setattr(extract, "build_backbone", lambda name, spec: backbone)  # build the network once
    _extract(few, tmp_path, spec, name="b")
    images = ImageCache(few[0])
    rows = [0, 4, 7]
    with torch.inference_mode():
        x = backbone.preprocess(torch.from_numpy(np.asarray(images.pixels[rows])))
        native = _native(spec["kind"], backbone, x, layer)
        expected = (pool_output(native, "map", pool) if native.ndim == 4 else native).numpy()
    got = FeatureStore(tmp_path / "b.zarr").read(layer, images.nsd_ids[rows])
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())  # float16 storage


def test_preprocessing_matches_torchvision_transforms():
    import torchvision.transforms.v2 as T

    from nsdflow.data.demo import render_scene

    b = build_backbone("a", {**ALEX, "layers": {"features.2": {"pool": "full"}}})
    pixels = torch.from_numpy(np.stack([render_scene(i, 0, 48)[0] for i in range(2)]))
    resize = T.Resize(224, interpolation=T.InterpolationMode.BICUBIC, antialias=True)
    norm = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    to_float = T.ToDtype(torch.float32, scale=True)
    ours = b.preprocess(pixels)
    # On the device in float: resize, clamp the bicubic overshoot to [0, 1] as a uint8 image would, normalise.
    in_float = torch.stack([norm(resize(to_float(p.permute(2, 0, 1))).clamp(0, 1)) for p in pixels])
    torch.testing.assert_close(ours, in_float, atol=1e-5, rtol=0)
    # torchvision's uint8 resize (fixed-point, rounded) differs by a fraction of a grey level on average.
    in_uint8 = torch.stack([norm(to_float(resize(p.permute(2, 0, 1)))) for p in pixels])
    assert ((ours - in_uint8) * 0.229 * 255).abs().mean() < 0.5


def test_bfloat16_autocast_path_runs_on_cpu():
    b = build_backbone("a", ALEX)
    x = torch.randint(0, 256, (2, 48, 48, 3), dtype=torch.uint8)
    exact = LayerRunner(b, {"features.5": "avg1"}, torch.device("cpu"), "float32")(x)["features.5"]
    bf16 = LayerRunner(b, {"features.5": "avg1"}, torch.device("cpu"), "bfloat16")(x)["features.5"]
    assert bf16.dtype == torch.float32  # pooled in float32 whatever the compute dtype
    torch.testing.assert_close(bf16, exact, rtol=0.05, atol=0.05 * exact.abs().max().item())


# ----------------------------------------------------------------------------- backbones


def test_several_layers_come_from_one_pass_that_stops_after_the_last():
    b = build_backbone("a", {**ALEX, "layers": {"features.0": {"pool": "full"}, "features.5": {"pool": "full"}}})
    calls = []
    b.model.classifier.register_forward_hook(lambda *_: calls.append("classifier"))
    b.model.features[0].register_forward_hook(lambda *_: calls.append("features.0"))
    with torch.inference_mode():
        out = b(torch.randint(0, 256, (1, 40, 40, 3), dtype=torch.uint8), ["features.0", "features.5"])
    assert calls == ["features.0"]  # one pass, and nothing after features.5 ran
    assert (out["features.0"].tensor < 0).any()  # the conv output, not overwritten by the in-place ReLU after it


def test_dinov2_layers_and_registers():
    spec = {"kind": "dinov2", "model": "vit_small_patch14_reg4_dinov2", "input_size": 28,
            "weights": {"init": "random", "seed": 0}, "layers": {"blocks.1": {"pool": "mean"}}}
    b = build_backbone("d", spec)
    with torch.inference_mode():
        out = b(torch.randint(0, 256, (2, 30, 30, 3), dtype=torch.uint8), ["blocks.1", "norm", "image"])
    t = out["blocks.1"]
    assert t.layout == "tokens" and t.prefix == 5 and t.tensor.shape == (2, 5 + 4, 384)  # cls + 4 registers + 2x2
    torch.testing.assert_close(pool_output(t.tensor, "tokens", "mean", t.prefix), t.tensor[:, 5:].mean(1))
    assert pool_output(t.tensor, "tokens", "avg2", t.prefix).shape == (2, 384 * 4)
    torch.testing.assert_close(out["image"].tensor, out["norm"].tensor[:, 0])
    with pytest.raises(BackboneError, match=r"no layer 'blocks\.12'; valid layers: image, norm, blocks\.0"):
        build_backbone("d", {**spec, "layers": {"blocks.12": {"pool": "cls"}}})
    with pytest.raises(BackboneError, match="multiple of 14"):
        build_backbone("d", {**spec, "input_size": 30})
    with pytest.raises(PoolingError, match="do not form a square grid"):
        pool_output(torch.zeros(1, 1 + 6, 4), "tokens", "avg2")


def _official_dinov2_layout(state, chunked=True):
    """A timm DINOv2 state dict in the layout of facebookresearch's dinov2_vits14_pretrain.pth."""
    out = {"mask_token": torch.zeros(1, state["cls_token"].shape[-1])}
    for k, v in state.items():
        if chunked and k.startswith("blocks."):  # block_chunks: blocks.<chunk>.<i>.
            k = "blocks.0." + k[len("blocks."):]
        out[k] = v
    return out


def test_dinov2_checkpoints_in_timm_and_official_layouts(tmp_path):
    import timm

    ref = timm.create_model(DINO_S, pretrained=False, img_size=56, num_classes=0).eval()
    torch.nn.init.normal_(ref.pos_embed, std=0.5)  # make a wrong position embedding visible
    x = torch.randint(0, 256, (2, 56, 56, 3), dtype=torch.uint8)
    spec = {"kind": "dinov2", "model": DINO_S, "input_size": 56, "layers": {"image": {"pool": "full"}}}
    torch.save(ref.state_dict(), tmp_path / "timm.pth")
    torch.save({"model": _official_dinov2_layout(ref.state_dict())}, tmp_path / "official.pth")
    for name in ("timm.pth", "official.pth"):
        b = build_backbone("d", {**spec, "weights": {"init": "checkpoint", "path": str(tmp_path / name)}})
        with torch.inference_mode():
            got = b(x, ["image"])["image"].tensor
            expected = ref.forward_features(b.preprocess(x))[:, 0]
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # At another input size the position embeddings are resampled (official ones are for 518 px).
    small = build_backbone("d", {**spec, "input_size": 28, "weights": {"init": "checkpoint",
                                                                       "path": str(tmp_path / "official.pth")}})
    assert small.model.pos_embed.shape == (1, 1 + 2 * 2, 384)
    torch.testing.assert_close(small.model.cls_token, ref.cls_token)
    state = convert_dinov2_state(_official_dinov2_layout(ref.state_dict(), chunked=False), small.model)
    assert "mask_token" not in state and state["pos_embed"].shape == (1, 5, 384)
    torch.save({"blocks.0.attn.qkv.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(BackboneError, match=f"does not hold {DINO_S} weights"):
        build_backbone("d", {**spec, "weights": {"init": "checkpoint", "path": str(tmp_path / "other.pth")}})


# ----------------------------------------------------------------------------- the cache


def test_an_image_shared_by_two_subjects_is_extracted_once(cache, tmp_path):
    _, index = cache
    info = _extract(cache, tmp_path)
    store = FeatureStore(tmp_path / "alex.zarr")
    assert info["extracted_images"] == len(store.nsd_ids) == index["nsd_id"].nunique() < len(index)
    shared = index.groupby("nsd_id")["subject"].nunique()
    shared_ids = shared[shared > 1].index.to_numpy()
    assert len(shared_ids) and np.isin(shared_ids, store.nsd_ids).all()
    assert len(np.unique(store.nsd_ids)) == len(store.nsd_ids)
    # Each subject's rows read the one stored row.
    x1 = store.read("features.5", shared_ids)
    np.testing.assert_array_equal(x1, store.read("features.5", shared_ids[::-1])[::-1])


def test_changed_settings_reextract_and_other_weights_are_never_reused(few, tmp_path):
    cache = few
    n = _extract(cache, tmp_path)["n_images"]
    assert _extract(cache, tmp_path)["extracted_images"] == 0  # same settings: reused
    repooled = _extract(cache, tmp_path, {**ALEX, "layers": {**ALEX["layers"], "features.5": {"pool": "avg2"}}})
    assert repooled["extracted_images"] == n and repooled["layers"]["features.5"]["shape"] == [n, 768]
    reseeded = _extract(cache, tmp_path, {**ALEX, "weights": {"init": "random", "seed": 7}})
    assert reseeded["extracted_images"] == n
    assert FeatureStore(tmp_path / "alex.zarr").spec["weights"] == {"init": "random", "seed": 7}
    # A checkpoint replaced at the same path: its checksum differs, so the store is rebuilt.
    ckpt = tmp_path / "alexnet.pth"
    torch.save(build_backbone("a", ALEX).model.state_dict(), ckpt)
    from_ckpt = {**ALEX, "weights": {"init": "checkpoint", "path": str(ckpt)}}
    first = _extract(cache, tmp_path, from_ckpt)
    before = _all(tmp_path / "alex.zarr", "features.5")
    assert first["extracted_images"] == n and _extract(cache, tmp_path, from_ckpt)["extracted_images"] == 0
    torch.save(build_backbone("a", {**ALEX, "weights": {"init": "random", "seed": 8}}).model.state_dict(), ckpt)
    again = _extract(cache, tmp_path, from_ckpt)
    assert again["extracted_images"] == n and again["spec"]["weights"]["sha256"] != first["spec"]["weights"]["sha256"]
    assert not np.allclose(_all(tmp_path / "alex.zarr", "features.5"), before)


def test_float32_storage_and_float16_overflow_is_an_error(few, tmp_path):
    cache = few
    info = _extract(cache, tmp_path, {**ALEX, "dtype": "float32"})
    assert info["layers"]["features.5"]["dtype"] == "float32"
    import zarr

    assert zarr.open_array(tmp_path / "alex.zarr" / "layers" / "features.5").dtype == np.float32
    huge = build_backbone("a", ALEX).model
    with torch.no_grad():
        huge.features[3].weight.mul_(1e7)
    torch.save(huge.state_dict(), tmp_path / "huge.pth")
    with pytest.raises(FloatingPointError, match="overflow float16: set backbones.alex.dtype: float32"):
        _extract(cache, tmp_path, {**ALEX, "weights": {"init": "checkpoint", "path": str(tmp_path / "huge.pth")}})


def test_sharded_equals_unsharded_and_combine_checks_every_chunk(cache, tmp_path):
    whole = _extract(cache, tmp_path, store=tmp_path / "whole.zarr")
    shards = [_extract(cache, tmp_path, store=tmp_path / "sharded.zarr", shard=k, shards=3) for k in range(3)]
    assert [s["chunks"] for s in shards] == [[0, 2], [2, 4], [4, 7]]
    assert sum(s["extracted_images"] for s in shards) == whole["n_images"]
    manifests = [tmp_path / f"alex.{k}-of-3.json" for k in range(3)]
    info = combine_features(tmp_path / "sharded.zarr", manifests, tmp_path / "alex.json")
    assert info["n_images"] == whole["n_images"] and info["shards"] == 3
    for layer in ALEX["layers"]:
        np.testing.assert_array_equal(_all(tmp_path / "sharded.zarr", layer), _all(tmp_path / "whole.zarr", layer))
    # Another number of shards re-extracts nothing already written.
    assert sum(_extract(cache, tmp_path, store=tmp_path / "sharded.zarr", shard=k, shards=2)["extracted_images"]
               for k in range(2)) == 0
    (tmp_path / "sharded.zarr" / "done" / "5").unlink()
    with pytest.raises(RuntimeError, match=r"1 of 7 chunks are not done \(e.g. \[5\]\), from shards \[2\]"):
        combine_features(tmp_path / "sharded.zarr", manifests, tmp_path / "alex.json")
    # A store rebuilt with other settings after a shard ran: that shard's manifest is stale.
    _extract(cache, tmp_path, {**ALEX, "chunk": 16}, store=tmp_path / "sharded.zarr")
    with pytest.raises(RuntimeError, match="was written for other settings"):
        combine_features(tmp_path / "sharded.zarr", manifests, tmp_path / "alex.json")


def test_a_store_written_by_a_running_job_is_not_rebuilt_by_another(few, tmp_path, monkeypatch):
    cache = few
    from nsdflow.features import chunks

    monkeypatch.setattr(chunks, "STORE_WAIT_SECONDS", 0.5)  # do not wait a minute for the other job
    with chunks.open_store(tmp_path / "alex.zarr", {"other": "settings"}, lambda g: g.create_array(
            "nsd_ids", data=np.arange(3), chunks=(3,))):
        with pytest.raises(StoreBusy, match="being written by another job"):
            _extract(cache, tmp_path)
    assert _extract(cache, tmp_path)["extracted_images"] == 8  # once that job is gone, rebuilt


# ----------------------------------------------------------------------------- killed and resumed


def test_sigkill_mid_extraction_resumes_to_the_same_array(cache, tmp_path):
    import json

    import zarr

    spec = {**ALEX, "chunk": 2, "batch_size": 1, "layers": {"features.5": {"pool": "avg2"}}}
    reference = _extract(cache, tmp_path, spec, store=tmp_path / "ref.zarr")
    n_chunks = -(-reference["n_images"] // 2)
    store = tmp_path / "killed.zarr"
    cmd = [sys.executable, "-m", "nsdflow.cli", "extract", "--name", "alex", "--spec", json.dumps(spec),
           "--images", str(cache[0]), "--store", str(store), "--out", str(tmp_path / "killed.json"),
           "--device", "cpu", "--threads", "2"]
    proc = subprocess.Popen(cmd, env=nsdflow_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not done_chunks(store) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)  # the moment a chunk is done: mid-way through the others
    proc.wait()
    done = done_chunks(store)
    assert 0 < len(done) < n_chunks, f"{len(done)} of {n_chunks} chunks done when killed: not mid-extraction"
    assert not (tmp_path / "killed.json").exists()
    with pytest.raises(RuntimeError, match="incomplete"):
        FeatureStore(store)
    raw = zarr.open_array(store / "layers" / "features.5", mode="r")[:]
    last = max(set(range(n_chunks)) - done)
    assert np.isnan(raw[last * 2 : last * 2 + 2]).all()  # unwritten rows read as NaN, never as zeros
    partial = FeatureStore(store, require_complete=False)
    with pytest.raises(RuntimeError, match="unwritten"):
        partial.read("features.5", partial.nsd_ids)
    # A done chunk whose image digests the kill left unwritten (they follow the marker) is extracted
    # again: its rows look changed.
    recorded = zarr.open_array(store / "image_digests", mode="r")[:]
    again = sum(len(rows) for rows in stale_rows(recorded, ImageCache(cache[0]).digests, 2, done).values())
    resumed = _extract(cache, tmp_path, spec, store=store)
    assert resumed["resumed"] and resumed["extracted_images"] == reference["n_images"] - 2 * len(done) + again
    np.testing.assert_array_equal(_all(store, "features.5"), _all(tmp_path / "ref.zarr", "features.5"))
