"""Backbones: CLIP (open_clip_torch), the Segment Anything image encoder, AlexNet (torchvision), DINOv2 (timm).

Each backbone is a class in :data:`BACKBONES` that builds its network from an explicit weights
spec (``init: random`` with a seed, ``init: checkpoint`` with a local path, or ``init: pretrained``
with an open_clip tag resolved offline from a local cache), preprocesses uint8 images on the
device, and returns the outputs of the requested layers from one forward pass, each in one of
three layouts that :mod:`nsdflow.features.pooling` understands:

* ``tokens``: (B, L, D) with ``prefix`` non-patch tokens first (the class token, DINOv2's
  registers), then the patch tokens (ViT blocks);
* ``map``: (B, C, H, W) (convolutions, SAM blocks and neck);
* ``vector``: (B, D) (embeddings, linear layers).

Only the part of the network the requested layers need runs: once every hooked layer has its
output and the final output is not requested, the forward pass stops (AlexNet's features.2
costs a fraction of the whole network, CLIP's blocks.6 half of it).

Nothing downloads: a missing checkpoint is an error, never a silent random initialisation.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


class BackboneError(ValueError):
    """A backbone's configuration cannot be honoured (unknown layer, missing checkpoint...)."""


@dataclass
class LayerOutput:
    tensor: torch.Tensor
    layout: str  # "tokens" | "map" | "vector"
    prefix: int = 1  # tokens: how many non-patch tokens come first (class token, registers)


def file_sha256(path: str | Path, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def _check_checkpoint(path: str | None, name: str) -> Path:
    if not path:
        raise BackboneError(f"backbone {name!r}: weights.init is 'checkpoint' but weights.path is not set")
    p = Path(path).expanduser()
    if not p.is_file():
        raise BackboneError(f"backbone {name!r}: checkpoint {p} does not exist (weights are never downloaded; "
                            "download the file once and point weights.path at it, or set weights.init: random)")
    return p


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise BackboneError(f"{path} does not hold a state dict")
    return obj


class Backbone:
    """Base class: subclasses set ``kind``, build ``self.model`` and implement ``_forward``."""

    kind: str = ""
    #: Default input side in pixels.
    default_input_size: int = 224

    def __init__(self, name: str, spec: dict[str, Any]):
        self.name = name
        self.spec = spec
        self.weights = dict(spec.get("weights") or {})
        self.input_size = int(spec.get("input_size") or self.default_input_size)
        init = self.weights.get("init")
        if init not in ("random", "checkpoint", "pretrained"):
            raise BackboneError(f"backbone {name!r}: weights.init must be random, checkpoint or pretrained, got {init!r}")
        self.model: torch.nn.Module = self._build()
        self.model.eval().requires_grad_(False)
        for module in self.model.modules():  # a hooked output must not be overwritten by a later in-place op
            if getattr(module, "inplace", None) is True:
                module.inplace = False
        self.mean = torch.tensor(self._mean_std()[0]).view(1, 3, 1, 1)
        self.std = torch.tensor(self._mean_std()[1]).view(1, 3, 1, 1)
        self._check_layers(list(spec.get("layers", {})))

    # -- to implement
    def _build(self) -> torch.nn.Module:
        raise NotImplementedError

    def _mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        raise NotImplementedError

    def available_layers(self) -> list[str]:
        raise NotImplementedError

    def _forward(self, x: torch.Tensor, layers: list[str]) -> dict[str, LayerOutput]:
        raise NotImplementedError

    # -- shared
    def weights_identity(self) -> dict[str, Any]:
        """What identifies these weights in a cache's metadata."""
        init = self.weights["init"]
        if init == "random":
            return {"init": "random", "seed": int(self.weights.get("seed", 0))}
        if init == "checkpoint":
            path = _check_checkpoint(self.weights.get("path"), self.name)
            return {"init": "checkpoint", "path": str(path), "sha256": file_sha256(path)}
        return {"init": "pretrained", "tag": self.weights.get("tag"), **self._pretrained_identity()}

    def _pretrained_identity(self) -> dict[str, Any]:
        return {}

    def _seed(self) -> None:
        torch.manual_seed(int(self.weights.get("seed", 0)))

    def _check_layers(self, layers: list[str]) -> None:
        valid = self.available_layers()
        bad = [layer for layer in layers if layer not in valid]
        if bad:
            shown = ", ".join(valid[:40]) + (" ..." if len(valid) > 40 else "")
            raise BackboneError(f"backbone {self.name!r} ({self.kind}) has no layer {', '.join(map(repr, bad))}; "
                                f"valid layers: {shown}")

    def to(self, device: torch.device) -> "Backbone":
        self.model.to(device)
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def preprocess(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 on the device -> normalised (B, 3, S, S) float32."""
        x = pixels.permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bicubic", antialias=True,
                              align_corners=False).clamp_(0.0, 1.0)
        return (x - self.mean) / self.std

    def forward_layers(self, x: torch.Tensor, layers: list[str]) -> dict[str, LayerOutput]:
        """The requested layers' outputs for preprocessed images ``x`` (one forward pass)."""
        return self._forward(x, layers)

    def __call__(self, pixels: torch.Tensor, layers: list[str]) -> dict[str, LayerOutput]:
        """Preprocess uint8 images (B, H, W, 3) and return the requested layers' outputs."""
        return self.forward_layers(self.preprocess(pixels), layers)


class _Captured(Exception):
    """Raised by a hook once every requested output is captured: the rest of the pass is skipped."""


def _hooked(model: torch.nn.Module, names: list[str], run, need_result: bool = True) -> dict[str, Any]:
    """Run ``run()`` with forward hooks that capture the outputs of the named submodules.

    With ``need_result`` False the pass stops as soon as every named output is captured, and
    ``outputs["__result__"]`` is None.
    """
    outputs: dict[str, Any] = {}
    handles = []
    wanted = set(names)

    def hook(_module, _inputs, out, name):
        outputs[name] = out
        if not need_result and wanted.issubset(outputs):
            raise _Captured

    for name in names:
        module = model.get_submodule(name)
        handles.append(module.register_forward_hook(lambda m, i, o, name=name: hook(m, i, o, name)))
    result = None
    try:
        result = run()
    except _Captured:
        pass
    finally:
        for h in handles:
            h.remove()
    outputs["__result__"] = result
    return outputs


# ============================================================================ CLIP


class ClipBackbone(Backbone):
    """CLIP image tower through open_clip_torch.

    Layers: ``image`` (the image embedding), ``blocks.N`` (output of transformer block N, tokens),
    or any submodule name of the visual tower (e.g. ``ln_post``).
    """

    kind = "clip"

    def _build(self) -> torch.nn.Module:
        import open_clip

        model_name = self.spec.get("model") or "ViT-B-32"
        if model_name not in open_clip.list_models():
            raise BackboneError(f"backbone {self.name!r}: open_clip has no model {model_name!r}; "
                                f"known: {', '.join(open_clip.list_models()[:30])} ...")
        self.default_input_size = 224
        init = self.weights["init"]
        kwargs: dict[str, Any] = {}
        if self.spec.get("input_size"):
            kwargs["force_image_size"] = int(self.spec["input_size"])
        if init == "random":
            self._seed()
            model = open_clip.create_model(model_name, pretrained=None, **kwargs)
        elif init == "checkpoint":
            path = _check_checkpoint(self.weights.get("path"), self.name)
            try:
                model = open_clip.create_model(model_name, pretrained=str(path), require_pretrained=True, **kwargs)
            except (RuntimeError, KeyError) as err:
                raise BackboneError(f"backbone {self.name!r}: {path} does not hold {model_name} weights ({err})") from err
        else:
            tag = self.weights.get("tag")
            if not tag:
                raise BackboneError(f"backbone {self.name!r}: weights.init is 'pretrained' but weights.tag is not set")
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            try:
                model = open_clip.create_model(model_name, pretrained=tag, cache_dir=self.weights.get("cache_dir"),
                                               require_pretrained=True, **kwargs)
            except Exception as err:  # noqa: BLE001 - offline resolution fails in many ways
                raise BackboneError(
                    f"backbone {self.name!r}: pretrained tag {tag!r} of {model_name} is not in the local cache "
                    f"{self.weights.get('cache_dir') or '(default)'}; nothing is downloaded at run time. "
                    f"({type(err).__name__}: {err})") from err
        visual = model.visual
        self.input_size = int(visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size)
        self._preprocess_cfg = getattr(visual, "preprocess_cfg", None) or {}
        return visual

    def _pretrained_identity(self) -> dict[str, Any]:
        try:
            import open_clip
            from huggingface_hub import try_to_load_from_cache

            cfg = open_clip.get_pretrained_cfg(self.spec.get("model") or "ViT-B-32", self.weights.get("tag"))
            repo = cfg.get("hf_hub", "").rstrip("/")
            if repo:
                for filename in ("open_clip_pytorch_model.bin", "open_clip_model.safetensors"):
                    path = try_to_load_from_cache(repo, filename, cache_dir=self.weights.get("cache_dir"))
                    if isinstance(path, str):
                        return {"path": path, "sha256": file_sha256(path)}
        except Exception:  # noqa: BLE001 - identity is best effort beyond the tag
            pass
        return {}

    def _mean_std(self):
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        return tuple(self._preprocess_cfg.get("mean", OPENAI_DATASET_MEAN)), tuple(
            self._preprocess_cfg.get("std", OPENAI_DATASET_STD))

    def _module_name(self, layer: str) -> str:
        if layer.startswith("blocks."):
            return "transformer.resblocks." + layer.split(".", 1)[1]
        return layer

    def available_layers(self) -> list[str]:
        names = ["image"]
        if hasattr(self.model, "transformer") and hasattr(self.model.transformer, "resblocks"):
            names += [f"blocks.{i}" for i in range(len(self.model.transformer.resblocks))]
        names += [n for n, _ in self.model.named_modules() if n]
        return names

    def _forward(self, x, layers):
        hooked = [self._module_name(layer) for layer in layers if layer != "image"]
        out = _hooked(self.model, hooked, lambda: self.model(x), need_result="image" in layers)
        result = {}
        for layer in layers:
            if layer == "image":
                result[layer] = LayerOutput(out["__result__"], "vector")
                continue
            t = out[self._module_name(layer)]
            t = t[0] if isinstance(t, tuple) else t
            if t.ndim == 3:
                batch_first = getattr(self.model.transformer, "batch_first", True)
                result[layer] = LayerOutput(t if batch_first else t.transpose(0, 1), "tokens")
            elif t.ndim == 4:
                result[layer] = LayerOutput(t, "map")
            else:
                result[layer] = LayerOutput(t.flatten(1), "vector")
        return result


# ============================================================================ AlexNet


class AlexNetBackbone(Backbone):
    """torchvision's AlexNet; layers are its module names (``features.2`` ... ``classifier.6``)."""

    kind = "alexnet"

    def _build(self):
        import torchvision

        if self.weights["init"] == "pretrained":
            raise BackboneError(f"backbone {self.name!r}: AlexNet takes weights.init random or checkpoint "
                                "(torchvision's alexnet-owt-7be5be79.pth as a local file)")
        self._seed()
        model = torchvision.models.alexnet(weights=None)
        if self.weights["init"] == "checkpoint":
            path = _check_checkpoint(self.weights.get("path"), self.name)
            try:
                model.load_state_dict(_load_state_dict(path))
            except RuntimeError as err:
                raise BackboneError(f"backbone {self.name!r}: {path} does not hold AlexNet weights ({str(err)[:300]})") from err
        return model

    def _mean_std(self):
        return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def available_layers(self):
        return [n for n, _ in self.model.named_modules() if n and n not in ("features", "classifier")]

    def _forward(self, x, layers):
        out = _hooked(self.model, layers, lambda: self.model(x), need_result=False)
        return {layer: LayerOutput(out[layer], "map" if out[layer].ndim == 4 else "vector") for layer in layers}


# ============================================================================ SAM


_SAM_VARIANTS = {
    "vit_b": dict(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": dict(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": dict(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
}


class SamBackbone(Backbone):
    """The Segment Anything image encoder (segment-anything); ``model`` is vit_b, vit_l or vit_h.

    Layers: ``neck`` (256 x S/16 x S/16, the encoder's output) and ``blocks.N`` (maps). The
    encoder's native input is 1024 px; ``input_size`` may be smaller (a multiple of 16), with
    the position embeddings of a checkpoint interpolated to match.
    """

    kind = "sam"
    default_input_size = 1024

    def _build(self):
        from functools import partial

        from segment_anything.modeling import ImageEncoderViT

        variant = self.spec.get("model") or "vit_b"
        if variant not in _SAM_VARIANTS:
            raise BackboneError(f"backbone {self.name!r}: SAM model must be one of {', '.join(_SAM_VARIANTS)}, got {variant!r}")
        if self.input_size % 16:
            raise BackboneError(f"backbone {self.name!r}: SAM input_size must be a multiple of 16, got {self.input_size}")
        if self.weights["init"] == "pretrained":
            raise BackboneError(f"backbone {self.name!r}: SAM takes weights.init random or checkpoint (sam_{variant}_*.pth)")
        self._seed()
        v = _SAM_VARIANTS[variant]
        encoder = ImageEncoderViT(
            depth=v["depth"], embed_dim=v["embed_dim"], img_size=self.input_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=v["num_heads"], patch_size=16,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=v["global_attn_indexes"], window_size=14,
            out_chans=256,
        )
        if self.weights["init"] == "checkpoint":
            path = _check_checkpoint(self.weights.get("path"), self.name)
            state = _load_state_dict(path)
            state = {k.removeprefix("image_encoder."): t for k, t in state.items()
                     if k.startswith("image_encoder.") or not any(k.startswith(p) for p in ("prompt_encoder.", "mask_decoder."))}
            state = _resize_sam_state(state, encoder)
            try:
                encoder.load_state_dict(state)
            except RuntimeError as err:
                raise BackboneError(f"backbone {self.name!r}: {path} does not hold SAM {variant} weights ({str(err)[:300]})") from err
        for block in encoder.blocks:  # the same attention through a fused kernel (see _sam_attention_sdpa)
            block.attn.forward = types.MethodType(_sam_attention_sdpa, block.attn)
        return encoder

    def _mean_std(self):
        mean = (123.675, 116.28, 103.53)
        std = (58.395, 57.12, 57.375)
        return tuple(m / 255 for m in mean), tuple(s / 255 for s in std)

    def available_layers(self):
        return ["neck"] + [f"blocks.{i}" for i in range(len(self.model.blocks))]

    def _forward(self, x, layers):
        out = _hooked(self.model, layers, lambda: self.model(x), need_result=False)
        result = {}
        for layer in layers:
            t = out[layer]
            if layer.startswith("blocks."):
                t = t.permute(0, 3, 1, 2)  # SAM blocks are channels-last (B, H, W, C)
            result[layer] = LayerOutput(t, "map")
        return result


# ============================================================================ DINOv2


_DINOV2_CHUNKED = re.compile(r"^blocks\.\d+\.(\d+)\.")
_QKV = ("q", "k", "v")
_QKV_RE = re.compile(r"^(blocks\.\d+\.attn)\.[qkv]$")


def convert_dinov2_state(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A DINOv2 state dict in timm's layout for ``model`` (a timm ``*_dinov2`` VisionTransformer).

    Accepts timm's own layout and the official facebookresearch one
    (``dinov2_vitb14_pretrain.pth``: ``mask_token``, position embeddings for 518 px, optionally
    chunked blocks ``blocks.<chunk>.<i>.``, registers); the position embeddings are resampled
    to the model's input size.
    """
    from timm.models.vision_transformer import checkpoint_filter_fn

    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
    if any(_DINOV2_CHUNKED.match(k) for k in state):
        state = {_DINOV2_CHUNKED.sub(r"blocks.\1.", k): v for k, v in state.items()}
    state = checkpoint_filter_fn(dict(state), model)
    if not hasattr(model, "head") or isinstance(model.head, torch.nn.Identity):
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    return state


class DinoV2Backbone(Backbone):
    """DINOv2 through timm (``vit_base_patch14_dinov2`` by default; any timm ``*_dinov2`` model).

    Layers: ``image`` (the class token after the final norm: DINOv2's image embedding),
    ``norm`` (every token after the final norm), ``blocks.N`` (tokens), ``blocks.N.attn.q`` (or
    ``.k``, ``.v``: that part of block N's attention projection, tokens), or any submodule name.
    Weights: ``init: checkpoint`` with a local file in timm's layout or the official
    ``dinov2_vitb14_pretrain.pth`` one (see :func:`convert_dinov2_state`), or ``init: random``.
    ``input_size`` must be a multiple of the patch size, 14 (default 224: 16 x 16 patches).
    """

    kind = "dinov2"
    default_input_size = 224

    def _build(self):
        import timm

        name = self.spec.get("model") or "vit_base_patch14_dinov2"
        known = timm.list_models("*dinov2*")
        if name not in known:
            raise BackboneError(f"backbone {self.name!r}: timm has no DINOv2 model {name!r}; known: {', '.join(known)}")
        if self.input_size % 14:
            raise BackboneError(f"backbone {self.name!r}: DINOv2 input_size must be a multiple of 14 (its patch "
                                f"size), got {self.input_size}")
        if self.weights["init"] == "pretrained":
            raise BackboneError(f"backbone {self.name!r}: DINOv2 takes weights.init random or checkpoint "
                                "(dinov2_vitb14_pretrain.pth or a timm state dict, as a local file)")
        self._seed()
        model = timm.create_model(name, pretrained=False, img_size=self.input_size, num_classes=0)
        if self.weights["init"] == "checkpoint":
            path = _check_checkpoint(self.weights.get("path"), self.name)
            try:
                model.load_state_dict(convert_dinov2_state(_load_state_dict(path), model))
            except (RuntimeError, KeyError, ValueError) as err:
                raise BackboneError(f"backbone {self.name!r}: {path} does not hold {name} weights "
                                    f"({str(err)[:300]})") from err
        return model

    def _mean_std(self):
        return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def available_layers(self):
        n = len(self.model.blocks)
        names = ["image", "norm"] + [f"blocks.{i}" for i in range(n)]
        names += [f"blocks.{i}.attn.{part}" for i in range(n) for part in _QKV]
        return names + [m for m, _ in self.model.named_modules() if m and m not in names]

    def _forward(self, x, layers):
        # blocks.N.attn.q (k, v): that third of the block's fused qkv projection, every token,
        # all heads side by side (B, L, D): the features Adeli et al. read with their decoder.
        hooked = sorted({_QKV_RE.sub(r"\1.qkv", layer) for layer in layers if layer != "image"})
        out = _hooked(self.model, hooked, lambda: self.model(x), need_result="image" in layers)
        prefix = int(getattr(self.model, "num_prefix_tokens", 1))
        result = {}
        for layer in layers:
            t = out["__result__"] if layer == "image" else out[_QKV_RE.sub(r"\1.qkv", layer)]
            t = t[0] if isinstance(t, tuple) else t
            if _QKV_RE.match(layer):
                d = t.shape[-1] // 3
                part = _QKV.index(layer.rsplit(".", 1)[1])
                t = t[..., part * d:(part + 1) * d]
            if t.ndim == 3:
                result[layer] = LayerOutput(t, "tokens", prefix)
            elif t.ndim == 4:
                result[layer] = LayerOutput(t, "map")
            else:
                result[layer] = LayerOutput(t.flatten(1), "vector")
        return result


def _sam_attention_sdpa(self, x: torch.Tensor) -> torch.Tensor:
    """segment-anything's ``Attention.forward``, with ``F.scaled_dot_product_attention``.

    The same arithmetic (softmax(q k^T * scale + relative-position bias) v), but the attention
    matrix is never materialised in float32 and softmaxed separately: at 1024 px a global block
    attends over 4,096 tokens, and the original (4096 x 4096 per head and image, float32 under
    autocast) dominates SAM's memory and much of its time on a GPU.
    """
    from segment_anything.modeling.image_encoder import get_rel_pos

    B, H, W, _ = x.shape
    qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # (B, heads, H*W, head_dim)
    bias = None
    if self.use_rel_pos:
        c = q.shape[-1]
        r_q = q.reshape(B * self.num_heads, H, W, c)
        rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, get_rel_pos(H, H, self.rel_pos_h).to(q.dtype))
        rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, get_rel_pos(W, W, self.rel_pos_w).to(q.dtype))
        bias = (rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).reshape(B, self.num_heads, H * W, H * W)
    x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
    x = x.view(B, self.num_heads, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, -1)
    return self.proj(x)


def _resize_sam_state(state: dict[str, torch.Tensor], encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Interpolate a checkpoint's position embeddings to the encoder's input size."""
    own = encoder.state_dict()
    for key, t in list(state.items()):
        if key not in own or own[key].shape == t.shape:
            continue
        if key == "pos_embed":  # (1, H, W, C)
            h, w = own[key].shape[1:3]
            state[key] = F.interpolate(t.permute(0, 3, 1, 2), size=(h, w), mode="bicubic",
                                       align_corners=False).permute(0, 2, 3, 1)
        elif key.endswith(("rel_pos_h", "rel_pos_w")):  # (2 * size - 1, head_dim)
            state[key] = F.interpolate(t.T[None], size=own[key].shape[0], mode="linear")[0].T
    return state


#: The backbone registry: the ``kind`` of a backbone in the config picks its class.
BACKBONES: dict[str, type[Backbone]] = {
    "clip": ClipBackbone,
    "sam": SamBackbone,
    "alexnet": AlexNetBackbone,
    "dinov2": DinoV2Backbone,
}


def build_backbone(name: str, spec: dict[str, Any]) -> Backbone:
    kind = spec.get("kind")
    if kind not in BACKBONES:
        raise BackboneError(f"backbone {name!r}: unknown kind {kind!r}; valid kinds: {', '.join(BACKBONES)}")
    return BACKBONES[kind](name, spec)
