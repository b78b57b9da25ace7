"""Backbones, pooling and image decoding (random weights, tiny inputs, CPU).

The image cache is tested in test_images.py, extraction and the feature store in test_extract.py.
"""

import pytest
import torch

from nsdflow.data.read import DataError
from nsdflow.features.backbones import BackboneError, build_backbone
from nsdflow.features.images import decode_image
from nsdflow.features.pooling import PoolingError, pool_output

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
    ({"kind": "dinov2", "model": "vit_small_patch14_dinov2", "input_size": 28}, {"image": "full", "blocks.2": "avg2"},
     [384, 384 * 4]),
])
def test_backbones_random_init(spec, layers, dims):
    spec = {**spec, "weights": {"init": "random", "seed": 1}, "layers": {k: {"pool": v} for k, v in layers.items()}}
    b = build_backbone("b", spec)
    x = torch.randint(0, 255, (2, 40, 40, 3), dtype=torch.uint8)
    with torch.inference_mode():
        out = b(x, list(layers))
    got = [pool_output(out[k].tensor, out[k].layout, p, out[k].prefix).shape[1] for k, p in layers.items()]
    assert got == dims
    # The same seed gives the same weights.
    b2 = build_backbone("b", spec)
    with torch.inference_mode():
        assert torch.equal(b2(x, list(layers))[list(layers)[0]].tensor, out[list(layers)[0]].tensor)


def test_unknown_layer_lists_valid_ones():
    with pytest.raises(BackboneError, match=r"has no layer 'features\.99'; valid layers: features\.0"):
        build_backbone("alex", {**ALEX, "layers": {"features.99": {"pool": "full"}}})


def test_unknown_kind_and_missing_checkpoint(tmp_path):
    with pytest.raises(BackboneError, match="unknown kind 'vgg'; valid kinds: clip, sam, alexnet, dinov2"):
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


def test_sam_attention_through_sdpa_equals_segment_anythings_own():
    from segment_anything.modeling.image_encoder import Attention

    b = build_backbone("s", {"kind": "sam", "model": "vit_b", "input_size": 64, "weights": {"init": "random", "seed": 0},
                             "layers": {"neck": {"pool": "avg2"}}})
    torch.manual_seed(0)
    for i, side in ((0, 14), (2, 4)):  # a windowed block (14 x 14 windows) and a global one (4 x 4 tokens)
        attn = b.model.blocks[i].attn
        with torch.no_grad():  # relative positions are zero-initialised: make them count
            attn.rel_pos_h.normal_(std=0.5)
            attn.rel_pos_w.normal_(std=0.5)
        x = torch.randn(2, side, side, 768)
        with torch.inference_mode():
            torch.testing.assert_close(attn(x), Attention.forward(attn, x), atol=1e-5, rtol=1e-4)
