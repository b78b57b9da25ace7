"""A demo dataset in the exact Algonauts 2023 layout, with a known ground truth.

The generator draws procedural scenes (sky and ground, gratings, houses, faces, stick-figure
bodies, signs with word-like glyphs, distractor shapes) and computes each vertex's response
from the *images themselves* with a hidden model that belongs to no backbone:

* a feature bank of image maps on a 32 x 32 grid: Gabor energy (4 orientations x 2 spatial
  frequencies), luminance and two colour-opponent channels, and one map per drawn category
  (face, body, place, word);
* each vertex pools those maps through a Gaussian population receptive field (pRF) and weighs
  the channels with its own tuning, through a compressive nonlinearity;
* ROIs are patches of the real fsaverage5 surface placed where they lie in a human brain, so
  retinotopic ROIs respond to local contrast in the contralateral visual field, category ROIs
  to their category, streams to mixtures, and vertices in no ROI weakly to anything.

Responses are then ``y = sqrt(NC) * signal + sqrt(1 - NC) * noise`` (both unit variance), so the
per-vertex noise ceiling NC is known exactly; its distribution follows the real NSD ceilings
(mean 0.31, quartiles 0.16 / 0.29 / 0.44, 5th-95th percentile 0.04-0.63, 0.6 % exactly 0).
Beside the public layout, the withheld folder holds what the challenge kept back: test fMRI,
noise ceilings and the noiseless test signal.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..io import atomic_write_json, save_npy
from .layout import (
    FSAVERAGE5_N_VERTICES,
    FSAVERAGE_N_VERTICES,
    HEMISPHERES,
    N_NSD_IMAGES,
    ROI_CLASSES,
    UNKNOWN,
    SubjectPaths,
    WithheldPaths,
    format_image_name,
    subject_name,
)

log = logging.getLogger(__name__)

GRID = 32  # resolution of the hidden model's feature maps
CATEGORIES = ("face", "body", "place", "word")
CHANNELS = tuple(
    [f"gabor_o{o}_f{f}" for f in range(2) for o in range(4)]
    + ["luminance", "red_green", "blue_yellow"]
    + list(CATEGORIES)
)
#: Quantiles of the real NSD noise ceilings (fractions), which the demo's ceilings follow exactly.
NC_QUANTILES = ((0.0, 0.0), (0.006, 0.0), (0.05, 0.04), (0.25, 0.16), (0.5, 0.29), (0.75, 0.44), (0.95, 0.63), (1.0, 0.85))


@dataclass(frozen=True)
class DemoConfig:
    """Size and seed of the demo dataset (the ``demo`` section of the config)."""

    seed: int = 0
    n_subjects: int = 2
    n_train: int = 300
    n_test: int = 50
    n_shared: int = 60
    image_size: int = 128
    roi_dropout: float = 0.1

    def __post_init__(self):
        if not 1 <= self.n_subjects <= 8:
            raise ValueError(f"demo.n_subjects must be in 1..8, got {self.n_subjects}")
        if self.n_shared > self.n_train:
            raise ValueError(f"demo.n_shared ({self.n_shared}) cannot exceed demo.n_train ({self.n_train})")
        if self.n_train < 10 or self.n_test < 2:
            raise ValueError("the demo needs at least 10 training and 2 test images per subject")
        if self.image_size < 32:
            raise ValueError(f"demo.image_size must be at least 32, got {self.image_size}")


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


# ============================================================================ images


def render_scene(nsd_id: int, seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw one procedural scene.

    Returns
    -------
    image : (size, size, 3) uint8
    labels : (size, size) uint8
        Which category owns each pixel after occlusion: 0 none, 1 face, 2 body, 3 place, 4 word.
    """
    from PIL import Image, ImageDraw

    rng = _rng(seed, 1, nsd_id)
    s = size
    img = Image.new("RGB", (s, s))
    lab = Image.new("L", (s, s), 0)
    d, dl = ImageDraw.Draw(img), ImageDraw.Draw(lab)

    # Sky and ground split at a horizon, each a vertical colour gradient.
    horizon = int(s * rng.uniform(0.25, 0.8))
    sky, ground = rng.uniform(40, 230, 3), rng.uniform(20, 200, 3)
    arr = np.empty((s, s, 3), dtype=np.float64)
    ramp = np.linspace(0.8, 1.2, s)[:, None]
    arr[:horizon] = (sky * ramp[:horizon])[:, None, :]
    arr[horizon:] = (ground * ramp[horizon:][::-1])[:, None, :]
    # A grating over a random patch: the low-level channels' main driver.
    yy, xx = np.mgrid[0:s, 0:s] / s
    theta, freq = rng.uniform(0, np.pi), rng.uniform(3, 14)
    grating = np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + rng.uniform(0, 2 * np.pi))
    cx, cy, rad = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.15, 0.5)
    window = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * rad**2))
    arr += (rng.uniform(20, 70) * grating * window)[..., None] * rng.uniform(0.5, 1.0, 3)
    img.paste(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)))

    def color(lo=0, hi=255):
        return tuple(int(c) for c in rng.uniform(lo, hi, 3))

    def pos(margin):
        return rng.uniform(margin, s - margin, 2)

    def face():
        r = s * rng.uniform(0.07, 0.2)
        x, y = pos(r)
        box = [x - r, y - r * 1.2, x + r, y + r * 1.2]
        d.ellipse(box, fill=color(150, 255))
        dl.ellipse(box, fill=1)
        for ex in (-0.4, 0.4):
            e = r * 0.15
            d.ellipse([x + ex * r - e, y - 0.3 * r - e, x + ex * r + e, y - 0.3 * r + e], fill=(20, 20, 20))
        d.arc([x - 0.45 * r, y + 0.1 * r, x + 0.45 * r, y + 0.6 * r], 20, 160, fill=(90, 20, 20), width=max(1, s // 64))

    def body():
        h = s * rng.uniform(0.2, 0.45)
        x, y = pos(h / 2)
        c = color(0, 180)
        w = max(1, int(h / 12))
        head = h * 0.12
        parts = [
            ((x, y - h * 0.3), (x, y + h * 0.15)),  # torso
            ((x, y - h * 0.2), (x - h * 0.22, y + rng.uniform(-0.1, 0.1) * h)),  # arms
            ((x, y - h * 0.2), (x + h * 0.22, y + rng.uniform(-0.1, 0.1) * h)),
            ((x, y + h * 0.15), (x - h * 0.15, y + h * 0.5)),  # legs
            ((x, y + h * 0.15), (x + h * 0.15, y + h * 0.5)),
        ]
        for a, b in parts:
            d.line([a, b], fill=c, width=w)
            dl.line([a, b], fill=2, width=w)
        hb = [x - head, y - h * 0.3 - 2 * head, x + head, y - h * 0.3]
        d.ellipse(hb, fill=c)
        dl.ellipse(hb, fill=2)

    def place():
        w = s * rng.uniform(0.2, 0.45)
        x, y = pos(w / 2)
        body_box = [x - w / 2, y - w * 0.25, x + w / 2, y + w * 0.4]
        roof = [(x - w * 0.6, y - w * 0.25), (x + w * 0.6, y - w * 0.25), (x, y - w * 0.7)]
        d.rectangle(body_box, fill=color(60, 220))
        d.polygon(roof, fill=color(40, 160))
        dl.rectangle(body_box, fill=3)
        dl.polygon(roof, fill=3)
        for wx in (-0.25, 0.25):
            ww = w * 0.1
            d.rectangle([x + wx * w - ww, y - ww, x + wx * w + ww, y + ww], fill=(30, 30, 60))
        d.rectangle([x - w * 0.07, y + w * 0.15, x + w * 0.07, y + w * 0.4], fill=(60, 30, 10))

    def word():
        w = s * rng.uniform(0.2, 0.45)
        h = w * rng.uniform(0.3, 0.6)
        x, y = pos(w / 2)
        box = [x - w / 2, y - h / 2, x + w / 2, y + h / 2]
        d.rectangle(box, fill=(235, 235, 225))
        dl.rectangle(box, fill=4)
        rows = int(rng.integers(1, 4))
        gh = h / (rows + 1)
        lw = max(1, int(gh / 5))
        for r in range(rows):
            gy = y - h / 2 + (r + 0.7) * gh
            gx = x - w / 2 + gh * 0.3
            while gx < x + w / 2 - gh * 0.6:
                kind = rng.integers(3)
                if kind == 0:
                    d.line([(gx, gy), (gx, gy + gh * 0.6)], fill=(10, 10, 10), width=lw)
                elif kind == 1:
                    d.arc([gx, gy, gx + gh * 0.5, gy + gh * 0.6], 0, 360, fill=(10, 10, 10), width=lw)
                else:
                    d.line([(gx, gy + gh * 0.6), (gx + gh * 0.4, gy)], fill=(10, 10, 10), width=lw)
                gx += gh * rng.uniform(0.45, 0.8)

    def distractor():
        r = s * rng.uniform(0.05, 0.2)
        x, y = pos(r)
        box = [x - r, y - r * rng.uniform(0.5, 1.5), x + r, y + r * rng.uniform(0.5, 1.5)]
        shape = rng.integers(3)
        if shape == 0:
            d.ellipse(box, fill=color())
        elif shape == 1:
            d.rectangle(box, fill=color())
        else:
            d.polygon([(box[0], box[3]), (box[2], box[3]), (x, box[1])], fill=color())
        # Occluders take the pixels from whatever category was under them.
        (dl.ellipse if shape == 0 else dl.rectangle)(box, fill=0)

    painters = [distractor] * int(rng.integers(0, 4))
    for painter, p in ((face, 0.45), (body, 0.45), (place, 0.45), (word, 0.35)):
        if rng.random() < p:
            painters.append(painter)
    for i in rng.permutation(len(painters)):
        painters[i]()
    return np.asarray(img, dtype=np.uint8), np.asarray(lab, dtype=np.uint8)


def _gabor_bank(size: int) -> np.ndarray:
    """Frequency-domain Gabor filters (8, size, size): 4 orientations x 2 spatial frequencies."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    filters = []
    for f0 in (0.06, 0.18):  # cycles per pixel at 128 px; scaled with the image below
        f0 = f0 * 128 / size if size < 128 else f0
        bw = f0 * 0.5
        for o in range(4):
            th = o * np.pi / 4
            u = fx * np.cos(th) + fy * np.sin(th)
            v = -fx * np.sin(th) + fy * np.cos(th)
            filters.append(np.exp(-((u - f0) ** 2 + v**2) / (2 * bw**2)))
    return np.stack(filters)


def image_feature_maps(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The hidden model's feature maps of one image: (len(CHANNELS), GRID, GRID), non-negative."""
    s = image.shape[0]
    rgb = image.astype(np.float64) / 255.0
    gray = rgb.mean(axis=2)
    spec = np.fft.fft2(gray - gray.mean())
    energy = np.abs(np.fft.ifft2(spec[None] * _gabor_bank(s))) ** 2
    lum = gray[None]
    rg = np.abs(rgb[..., 0] - rgb[..., 1])[None]
    by = np.abs(rgb[..., 2] - (rgb[..., 0] + rgb[..., 1]) / 2)[None]
    cats = np.stack([(labels == k + 1).astype(np.float64) for k in range(len(CATEGORIES))])
    maps = np.concatenate([energy / (energy.mean() + 1e-9) * 0.5, lum, rg, by, cats])
    return _pool_to_grid(maps, GRID)


def _pool_to_grid(maps: np.ndarray, grid: int) -> np.ndarray:
    c, s, _ = maps.shape
    edges = np.linspace(0, s, grid + 1).astype(int)
    out = np.add.reduceat(np.add.reduceat(maps, edges[:-1], axis=1), edges[:-1], axis=2)
    counts = np.outer(np.diff(edges), np.diff(edges))
    return out / counts


# ============================================================================ surface and ROIs

# Seeds in fsaverage pial coordinates of the left hemisphere (mm); the right mirrors x.
# (name, x, y, z, radius in sphere units). Placed where these regions lie in a human brain.
_SEEDS: dict[str, list[tuple[str, float, float, float, float]]] = {
    "prf-visualrois": [
        ("V1v", -8, -86, -4, 13), ("V1d", -8, -92, 8, 13), ("V2v", -12, -80, -12, 11),
        ("V2d", -10, -94, 18, 11), ("V3v", -22, -78, -14, 10), ("V3d", -18, -95, 24, 10),
        ("hV4", -32, -78, -16, 10),
    ],
    "floc-bodies": [("EBA", -48, -70, 4, 11), ("FBA-1", -42, -50, -18, 8), ("FBA-2", -40, -40, -20, 7),
                    ("mTL-bodies", -30, -30, -22, 6)],
    "floc-faces": [("OFA", -40, -80, -10, 8), ("FFA-1", -40, -56, -20, 8), ("FFA-2", -40, -44, -22, 7),
                   ("mTL-faces", -32, -28, -24, 6), ("aTL-faces", -36, -8, -36, 6)],
    "floc-places": [("OPA", -34, -84, 22, 10), ("PPA", -26, -46, -10, 10), ("RSC", -12, -56, 12, 9)],
    "floc-words": [("OWFA", -44, -74, -12, 7), ("VWFA-1", -46, -58, -14, 8), ("VWFA-2", -46, -48, -12, 7),
                   ("mfs-words", -36, -50, -16, 6), ("mTL-words", -30, -36, -18, 6)],
    "streams": [("early", -10, -90, 4, 26), ("midventral", -28, -76, -16, 16), ("midlateral", -40, -80, 4, 16),
                ("midparietal", -24, -86, 28, 16), ("ventral", -36, -50, -18, 20), ("lateral", -48, -64, 6, 20),
                ("parietal", -28, -66, 44, 20)],
}
_RADIUS_SCALE = 1.6  # fsaverage5 is coarse: about 3.5 sphere units between neighbouring vertices
_FOVEA = (-20, -102, 0)  # foveal confluence near the occipital pole
_OPTIONAL_CLASSES = ("floc-bodies", "floc-faces", "floc-places", "floc-words")


@dataclass
class HemisphereLayout:
    """Where the demo's challenge vertices and ROIs lie on one subject's hemisphere."""

    fsaverage_vertices: np.ndarray  # (V,) ascending indices into fsaverage (all < 10,242)
    labels: dict[str, np.ndarray]  # class -> (V,) int label in challenge space
    sphere: np.ndarray  # (V, 3) sphere coordinates of the challenge vertices
    fovea_distance: np.ndarray  # (V,) distance from the foveal confluence (sphere units)


def hemisphere_layout(subject_index: int, hemi: str, cfg: DemoConfig) -> HemisphereLayout:
    """Place this subject's ROIs on fsaverage5 with subject-specific jitter and missing ROIs."""
    from .surface import fsaverage5_mesh

    pial, _ = fsaverage5_mesh(hemi, "pial")
    sphere, _ = fsaverage5_mesh(hemi, "sphere")
    sign = -1.0 if hemi == "lh" else 1.0
    rng = _rng(cfg.seed, 2, subject_index, HEMISPHERES.index(hemi))

    def snap(x, y, z):
        p = np.array([sign * abs(x), y, z]) if hemi == "rh" else np.array([x, y, z])
        return int(np.argmin(((pial - p) ** 2).sum(axis=1)))

    full_labels: dict[str, np.ndarray] = {}
    reach = np.full(FSAVERAGE5_N_VERTICES, np.inf)
    for cls, seeds in _SEEDS.items():
        dists = []
        for name, x, y, z, radius in seeds:
            jitter = rng.normal(0, 2.5, 3)
            v = snap(x + jitter[0], y + jitter[1], z + jitter[2])
            dist = np.linalg.norm(sphere - sphere[v], axis=1) / (radius * _RADIUS_SCALE)
            dropped = cls in _OPTIONAL_CLASSES and rng.random() < cfg.roi_dropout
            dists.append(np.full_like(dist, np.inf) if dropped else dist)
            reach = np.minimum(reach, dist)
        dists = np.stack(dists)
        nearest = dists.argmin(axis=0)
        inside = dists.min(axis=0) <= 1.0
        full_labels[cls] = np.where(inside, nearest + 1, 0)
    # The challenge vertices: every ROI vertex plus a margin of unlabelled cortex around them.
    vertices = np.flatnonzero(reach <= 1.5 + rng.uniform(-0.05, 0.05))
    fovea = snap(*_FOVEA)
    return HemisphereLayout(
        fsaverage_vertices=vertices,
        labels={cls: lab[vertices].astype(np.int32) for cls, lab in full_labels.items()},
        sphere=sphere[vertices],
        fovea_distance=np.linalg.norm(sphere[vertices] - sphere[fovea], axis=1),
    )


# ============================================================================ hidden model


def _smooth_field(points: np.ndarray, rng: np.random.Generator, n_waves: int = 12, scale: float = 0.06) -> np.ndarray:
    """A smooth random field over the sphere (sum of plane waves), standardised."""
    k = rng.normal(0, scale, (n_waves, 3))
    phase = rng.uniform(0, 2 * np.pi, n_waves)
    f = np.cos(points @ k.T + phase).sum(axis=1)
    return (f - f.mean()) / (f.std() + 1e-12)


def vertex_tuning(layout: HemisphereLayout, hemi: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Each vertex's pRF (centre, size, in image half-widths) and channel weights."""
    V = layout.sphere.shape[0]
    n_ch = len(CHANNELS)
    prf_names = ROI_CLASSES["prf-visualrois"]
    prf = layout.labels["prf-visualrois"]
    contra = 1.0 if hemi == "lh" else -1.0  # left hemisphere sees the right visual field

    # Defaults for vertices in no ROI: weak, random pRFs and tuning.
    cx = rng.uniform(-0.8, 0.8, V)
    cy = rng.uniform(-0.8, 0.8, V)
    size = rng.uniform(0.3, 0.8, V)
    weights = rng.gamma(0.6, 1.0, (V, n_ch))
    weights[:, 11:] *= 0.3

    def set_category(mask, category, spread):
        idx = 11 + CATEGORIES.index(category)
        weights[mask] = rng.gamma(0.5, 0.15, (mask.sum(), n_ch))
        weights[mask, idx] = rng.uniform(1.0, 2.0, mask.sum())
        ecc = rng.uniform(0.0, 0.35, mask.sum())
        ang = rng.uniform(-np.pi / 2, np.pi / 2, mask.sum())
        cx[mask] = contra * np.abs(ecc * np.cos(ang)) * 0.6
        cy[mask] = ecc * np.sin(ang)
        size[mask] = rng.uniform(*spread, mask.sum())

    # Streams (lowest priority here; overwritten by prf and floc tuning below).
    streams = layout.labels["streams"]
    names = ROI_CLASSES["streams"]
    mix = {
        "midventral": ("face", "word"), "ventral": ("face", "place"), "midlateral": ("body", "face"),
        "lateral": ("body", "word"), "midparietal": ("place", "body"), "parietal": ("place", "place"),
    }
    for label, name in enumerate(names, start=1):
        m = streams == label
        if name in mix and m.any():
            set_category(m, mix[name][0], (0.4, 0.9))
            weights[m, 11 + CATEGORIES.index(mix[name][1])] += rng.uniform(0.3, 0.8, m.sum())
            weights[m, :11] += rng.gamma(0.8, 0.3, (m.sum(), 11))

    # Category-selective ROIs.
    for cls in _OPTIONAL_CLASSES:
        category = {"floc-bodies": "body", "floc-faces": "face", "floc-places": "place", "floc-words": "word"}[cls]
        m = layout.labels[cls] > 0
        if m.any():
            set_category(m, category, (0.35, 0.7))

    # Retinotopic ROIs (and the early stream): contralateral, eccentricity from the fovea.
    early = (prf > 0) | (streams == names.index("early") + 1)
    if early.any():
        d = layout.fovea_distance[early]
        ecc = np.clip(d / np.percentile(d, 95), 0.03, 1.0)
        field = _smooth_field(layout.sphere[early], rng)
        polar = (0.5 + 0.45 * np.tanh(field)) * (np.pi / 2)  # 0..90 degrees away from the horizontal meridian
        names_prf = np.array([""] + list(prf_names))[prf[early]]
        lower = np.char.endswith(names_prf.astype(str), "d")  # dorsal ROIs map the lower field
        upper = np.char.endswith(names_prf.astype(str), "v") | (names_prf == "hV4")
        side = np.where(lower, 1.0, np.where(upper, -1.0, rng.choice([-1.0, 1.0], early.sum())))
        cx[early] = contra * ecc * np.cos(polar)
        cy[early] = side * ecc * np.sin(polar)  # image rows grow downwards: +y is the lower field
        level = np.select([np.isin(names_prf, ["V1v", "V1d"]), np.isin(names_prf, ["V2v", "V2d"]),
                           np.isin(names_prf, ["V3v", "V3d"]), names_prf == "hV4"], [1.0, 1.5, 2.0, 3.0], 2.5)
        size[early] = (0.04 + 0.12 * ecc) * level
        w = np.zeros((early.sum(), n_ch))
        pref_o = rng.integers(0, 4, early.sum())
        high_sf = rng.random(early.sum()) < np.clip(1.3 - level / 2.5, 0.1, 0.9)
        for o in range(4):
            tuning = np.exp(np.cos((o - pref_o) * np.pi / 2) * 1.5)
            w[:, o] = np.where(high_sf, 0.3, 1.0) * tuning
            w[:, 4 + o] = np.where(high_sf, 1.0, 0.3) * tuning
        w[:, :8] /= w[:, :8].sum(axis=1, keepdims=True)
        w[:, 8] = rng.uniform(0.1, 0.4, early.sum())
        w[:, 9:11] = rng.uniform(0.0, 0.4, (early.sum(), 2)) * (level[:, None] / 2)
        w[:, 11:] = rng.gamma(0.3, 0.05, (early.sum(), 4))
        weights[early] = w
    return {"cx": cx, "cy": cy, "size": size, "weights": weights}


def vertex_signal(feature_maps: np.ndarray, tuning: dict[str, np.ndarray]) -> np.ndarray:
    """Noiseless responses (n_images, V): pRF pooling, compressive nonlinearity, tuning.

    Not yet standardised; callers standardise over the subject's images.
    """
    n, c = feature_maps.shape[:2]
    g = np.linspace(-1 + 1 / GRID, 1 - 1 / GRID, GRID)
    gx, gy = np.meshgrid(g, g)  # gy grows down the image, like rows
    pos = np.stack([gx.ravel(), gy.ravel()], axis=1)  # (G^2, 2)
    d2 = (pos[:, 0:1] - tuning["cx"][None]) ** 2 + (pos[:, 1:2] - tuning["cy"][None]) ** 2
    prf = np.exp(-d2 / (2 * tuning["size"][None] ** 2))
    prf /= prf.sum(axis=0, keepdims=True)  # (G^2, V)
    flat = feature_maps.reshape(n * c, GRID * GRID)
    pooled = (flat @ prf).reshape(n, c, -1)  # (n, C, V)
    return np.einsum("ncv,vc->nv", np.sqrt(np.maximum(pooled, 0)), tuning["weights"])


def noise_ceilings(layout: HemisphereLayout, rng: np.random.Generator) -> np.ndarray:
    """Per-vertex NC (fraction) whose marginal matches :data:`NC_QUANTILES` exactly.

    Higher in retinotopic and category ROIs than in cortex outside every ROI, and smooth over
    the surface: a latent value per vertex is ranked, and its rank read through the quantiles.
    """
    V = layout.sphere.shape[0]
    in_prf = layout.labels["prf-visualrois"] > 0
    in_floc = np.any([layout.labels[c] > 0 for c in _OPTIONAL_CLASSES], axis=0)
    in_stream = layout.labels["streams"] > 0
    latent = np.select([in_prf, in_floc, in_stream], [1.0, 0.6, 0.0], -0.9)
    latent = latent + 0.6 * _smooth_field(layout.sphere, rng, scale=0.08) + 0.5 * rng.normal(size=V)
    u = (np.argsort(np.argsort(latent)) + 0.5) / V
    p, q = np.array(NC_QUANTILES).T
    nc = np.interp(u, p, q)
    nc[u < NC_QUANTILES[1][0]] = 0.0
    return nc


# ============================================================================ the dataset


def _assign_images(cfg: DemoConfig) -> dict[str, dict[str, np.ndarray]]:
    """NSD ids per subject and split; ``n_shared`` ids are in every subject's training set."""
    rng = _rng(cfg.seed, 0)
    n_unique = cfg.n_subjects * (cfg.n_train - cfg.n_shared + cfg.n_test) + cfg.n_shared
    pool = rng.choice(N_NSD_IMAGES, size=n_unique, replace=False)
    shared, rest = pool[: cfg.n_shared], pool[cfg.n_shared :]
    out = {}
    per = cfg.n_train - cfg.n_shared + cfg.n_test
    for i in range(cfg.n_subjects):
        own = rest[i * per : (i + 1) * per]
        train = rng.permutation(np.concatenate([shared, own[: cfg.n_train - cfg.n_shared]]))
        out[subject_name(i + 1)] = {"train": train, "test": own[cfg.n_train - cfg.n_shared :]}
    return out


def generate(root: str | Path, withheld: str | Path, cfg: DemoConfig = DemoConfig(), threads: int = 1) -> dict:
    """Write the demo dataset: the public Algonauts layout under ``root``, the rest under ``withheld``.

    Returns the manifest (also written to ``root/../demo_manifest.json`` by the CLI).
    """
    from PIL import Image
    from tqdm import tqdm

    root, withheld = Path(root), Path(withheld)
    assignment = _assign_images(cfg)
    all_ids = sorted({int(i) for s in assignment.values() for split in s.values() for i in split})

    # Draw every unique image once and compute its hidden feature maps.
    maps: dict[int, np.ndarray] = {}
    rendered: dict[int, np.ndarray] = {}
    for nsd_id in tqdm(all_ids, desc="demo: drawing scenes", unit="img", mininterval=2):
        image, labels = render_scene(nsd_id, cfg.seed, cfg.image_size)
        rendered[nsd_id] = image
        maps[nsd_id] = image_feature_maps(image, labels)

    manifest = {"config": asdict(cfg), "subjects": {}, "channels": list(CHANNELS)}
    for s_idx, (subject, ids) in enumerate(assignment.items()):
        paths, held = SubjectPaths(root, subject), WithheldPaths(withheld, subject)
        for split in ("train", "test"):
            folder = paths.images_dir(split)
            folder.mkdir(parents=True, exist_ok=True)
            for k, nsd_id in enumerate(ids[split], start=1):
                Image.fromarray(rendered[int(nsd_id)]).save(folder / format_image_name(split, k, int(nsd_id)))
        paths.roi_dir.mkdir(parents=True, exist_ok=True)
        for cls, names in ROI_CLASSES.items():
            mapping = {0: UNKNOWN, **{i + 1: n for i, n in enumerate(names)}}
            np.save(paths.mapping(cls), np.array(mapping, dtype=object), allow_pickle=True)
        info = {"n_train": len(ids["train"]), "n_test": len(ids["test"]), "hemispheres": {}}
        for hemi in HEMISPHERES:
            layout = hemisphere_layout(s_idx + 1, hemi, cfg)
            rng = _rng(cfg.seed, 3, s_idx + 1, HEMISPHERES.index(hemi))
            tuning = vertex_tuning(layout, hemi, rng)
            feats = np.stack([maps[int(i)] for i in np.concatenate([ids["train"], ids["test"]])])
            signal = vertex_signal(feats, tuning)
            signal = (signal - signal.mean(0)) / (signal.std(0) + 1e-12)
            nc = noise_ceilings(layout, rng)
            noise = rng.standard_normal(signal.shape)
            fmri = np.sqrt(nc) * signal + np.sqrt(1 - nc) * noise
            n_tr = len(ids["train"])
            save_npy(paths.fmri(hemi), fmri[:n_tr].astype(np.float32))
            save_npy(held.test_fmri(hemi), fmri[n_tr:].astype(np.float32))
            save_npy(held.test_signal(hemi), signal[n_tr:].astype(np.float32))
            save_npy(held.noise_ceiling(hemi), nc.astype(np.float32))
            save_npy(held.prf(hemi), np.stack([tuning["cx"], tuning["cy"], tuning["size"]], axis=1).astype(np.float32))
            all_vertices = np.zeros(FSAVERAGE_N_VERTICES, dtype=np.int32)
            all_vertices[layout.fsaverage_vertices] = 1
            save_npy(paths.fsaverage_vertices(hemi), all_vertices)
            for cls, labels in layout.labels.items():
                save_npy(paths.roi_mask(hemi, cls, "challenge"), labels.astype(np.int32))
                fs = np.zeros(FSAVERAGE_N_VERTICES, dtype=np.int32)
                fs[layout.fsaverage_vertices] = labels
                save_npy(paths.roi_mask(hemi, cls, "fsaverage"), fs)
            info["hemispheres"][hemi] = {
                "n_vertices": int(layout.fsaverage_vertices.size),
                "noise_ceiling_mean": float(nc.mean()),
                "noise_ceiling_quartiles": [float(x) for x in np.percentile(nc, [25, 50, 75])],
                "rois_absent": {
                    cls: [n for i, n in enumerate(ROI_CLASSES[cls], 1) if not (lab == i).any()]
                    for cls, lab in layout.labels.items()
                },
            }
        manifest["subjects"][subject] = info
    manifest["n_unique_images"] = len(all_ids)
    atomic_write_json(withheld / "demo_manifest.json", manifest)
    log.info("demo: %d subjects, %d unique images -> %s", cfg.n_subjects, len(all_ids), root)
    return manifest


MARKER = ".nsdflow-demo"


def write_demo(root: str | Path, withheld: str | Path, cfg: DemoConfig = DemoConfig()) -> dict:
    """:func:`generate` into folders that hold nothing or an earlier demo (never a user's data).

    A folder not written by the demo (no marker file) is refused, not overwritten; an earlier
    demo is removed first, so that a smaller demo config leaves no stale subjects behind.
    """
    import shutil

    for folder in (Path(root), Path(withheld)):
        if folder.exists() and any(folder.iterdir()):
            if not (folder / MARKER).exists():
                raise ValueError(f"{folder} exists and was not written by `nsdflow demo`; refusing to overwrite it")
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MARKER).touch()
    return generate(root, withheld, cfg)


def load_manifest(withheld: str | Path) -> dict:
    return json.loads((Path(withheld) / "demo_manifest.json").read_text())
