"""Built-in synthetic person re-identification data, written in the exact Market-1501 layout.

Why: the demo and the tests need a reID dataset that exists without a download, that is hard enough
for an untrained network (so learning is visible) and that a small CNN learns in minutes on a CPU.

Identities differ by clothing colours and patterns (upper/lower colour, stripes, checks, a logo),
trousers/shorts/skirt, sleeves, hair, body proportions and accessories (hat, shoulder bag, backpack).
Cameras differ by background, illumination and colour cast, person scale, blur, viewpoint (front /
back / side, horizontal flip, shear) and partial occlusion. Camera nuisances are strong on purpose:
raw pixels and random features mostly match "same camera", the identity has to be learned.

Layout written by :func:`write_synthetic_reid` into ``out_dir`` (the dataset folder itself)::

    out_dir/
      bounding_box_train/0002_c1s1_000451_03.jpg ...   training identities
      bounding_box_test/ ...                            gallery: test identities, distractors
                                                        (pid 0000) and junk boxes (pid -1)
      query/ ...                                        one image per (test identity, query camera)
      attributes.csv                                    per-identity attribute labels
      README.txt                                        what was generated, with which parameters

Every image is 128x64 (Market-1501's native size). The output is byte-identical for a seed: all
random parameters are drawn in one sequential pass from ``numpy.random.default_rng(seed)``; images are
then rendered from those parameters only (optionally in worker processes).
"""
from __future__ import annotations

import csv
import io
import os
from concurrent.futures import ProcessPoolExecutor
from types import MappingProxyType
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image, ImageFilter

from omnireid.utils.errors import ConfigError, OutputError

IMAGE_HEIGHT = 128
IMAGE_WIDTH = 64
JPEG_QUALITY = 92
MAX_CAMERAS = 9  # Market-1501 file names hold a single camera digit (c1..c9)

# Named clothing colours (sRGB 0-1). Names are the attribute labels.
COLOURS: MappingProxyType[str, tuple[float, float, float]] = MappingProxyType({
    "black": (0.08, 0.08, 0.09),
    "white": (0.92, 0.92, 0.90),
    "grey": (0.50, 0.50, 0.52),
    "red": (0.80, 0.10, 0.12),
    "orange": (0.95, 0.50, 0.08),
    "yellow": (0.95, 0.85, 0.15),
    "green": (0.15, 0.60, 0.20),
    "blue": (0.15, 0.35, 0.85),
    "purple": (0.50, 0.18, 0.62),
    "pink": (0.95, 0.55, 0.70),
    "brown": (0.45, 0.28, 0.12),
    "cyan": (0.10, 0.75, 0.80),
})
HAIR_COLOURS: MappingProxyType[str, tuple[float, float, float]] = MappingProxyType({
    "black": (0.06, 0.05, 0.05),
    "brown": (0.30, 0.18, 0.08),
    "blond": (0.85, 0.70, 0.35),
    "grey": (0.60, 0.60, 0.60),
})
SKIN_TONES = ((0.95, 0.80, 0.68), (0.85, 0.65, 0.50), (0.62, 0.44, 0.30), (0.40, 0.27, 0.18))
UPPER_PATTERNS = ("plain", "horizontal_stripes", "vertical_stripes", "checks", "logo")
LOWER_STYLES = ("trousers", "shorts", "skirt")
VIEWS = ("front", "back", "side")

ATTRIBUTE_COLUMNS = (
    "pid", "split", "upper_colour", "upper_pattern", "pattern_colour", "sleeves", "lower_colour",
    "lower_style", "hair_colour", "hair_length", "body_type", "hat", "bag", "backpack",
)


@dataclass(frozen=True)
class Identity:
    """What makes a person recognisable across cameras."""

    pid: int
    split: str
    upper_colour: str
    upper_rgb: tuple[float, float, float]
    upper_pattern: str
    pattern_colour: str
    pattern_rgb: tuple[float, float, float]
    sleeves: str
    lower_colour: str
    lower_rgb: tuple[float, float, float]
    lower_style: str
    hair_colour: str
    hair_rgb: tuple[float, float, float]
    hair_length: str
    skin_rgb: tuple[float, float, float]
    shoe_rgb: tuple[float, float, float]
    body_type: str
    height: float  # fraction of the person box height
    width: float  # torso width multiplier
    leg_ratio: float  # fraction of the height taken by the legs
    hat: bool
    hat_rgb: tuple[float, float, float]
    bag: bool
    bag_rgb: tuple[float, float, float]
    bag_side: int
    backpack: bool
    backpack_rgb: tuple[float, float, float]

    def attributes(self) -> dict[str, object]:
        return {
            "pid": self.pid, "split": self.split, "upper_colour": self.upper_colour,
            "upper_pattern": self.upper_pattern,
            "pattern_colour": self.pattern_colour if self.upper_pattern != "plain" else "none",
            "sleeves": self.sleeves, "lower_colour": self.lower_colour, "lower_style": self.lower_style,
            "hair_colour": self.hair_colour, "hair_length": self.hair_length, "body_type": self.body_type,
            "hat": int(self.hat), "bag": int(self.bag), "backpack": int(self.backpack),
        }


@dataclass(frozen=True)
class Camera:
    """A camera's scene and imaging conditions (the nuisance a reID model must ignore)."""

    index: int  # 1-based, as in file names
    background: str
    palette: tuple[tuple[float, float, float], ...]
    cast: tuple[float, float, float]  # per-channel gains (colour cast)
    gamma: float
    scale: tuple[float, float]  # person height / image height
    blur: float  # Gaussian blur radius in pixels
    view_probs: tuple[float, float, float]  # front, back, side
    shear: float  # maximum absolute horizontal shear
    occlusion: str  # none / bottom / pole / side
    occlusion_prob: float
    light: tuple[float, float] = (0.85, 1.15)  # range of the per-image brightness factor
    haze: float = 0.0  # fraction of the image replaced by haze_rgb (fog, glare: lower contrast)
    haze_rgb: tuple[float, float, float] = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Shot:
    """One image: an identity seen by a camera, with every random choice already made."""

    filename: str
    folder: str
    identity: Identity | None  # None: a junk box (no person, or a badly cut one)
    camera: Camera
    view: str
    flip: bool
    scale: float
    centre_x: float
    top_jitter: float
    stride: float  # leg separation (walking phase)
    background_shift: tuple[int, int]
    clutter: tuple[tuple[float, float, float, float, int], ...]  # x0, y0, x1, y1 (fractions), colour idx
    light: float  # per-image brightness factor
    shear: float
    occluded: bool
    occluder_pos: float
    junk_crop: tuple[float, float]  # junk only: vertical offset and scale of the badly cut box
    noise_seed: int


_CAMERA_TEMPLATES = (
    dict(background="brick", palette=((0.62, 0.28, 0.20), (0.80, 0.75, 0.70), (0.30, 0.30, 0.32)),
         cast=(1.2, 1.0, 0.8), gamma=0.9, scale=(0.84, 0.95), blur=0.0, view_probs=(0.6, 0.2, 0.2),
         shear=0.0, occlusion="none", occlusion_prob=0.0),
    dict(background="hedge", palette=((0.18, 0.45, 0.16), (0.55, 0.55, 0.55), (0.70, 0.68, 0.60)),
         cast=(0.82, 1.0, 1.2), gamma=1.1, scale=(0.74, 0.86), blur=0.8, view_probs=(0.2, 0.6, 0.2),
         shear=0.12, occlusion="bottom", occlusion_prob=0.2),
    dict(background="glass", palette=((0.35, 0.55, 0.75), (0.15, 0.25, 0.40), (0.80, 0.85, 0.90)),
         cast=(0.9, 1.18, 0.88), gamma=1.0, scale=(0.88, 0.98), blur=0.0, view_probs=(0.3, 0.3, 0.4),
         shear=-0.10, occlusion="pole", occlusion_prob=0.2),
    dict(background="panels", palette=((0.82, 0.74, 0.55), (0.55, 0.45, 0.30), (0.95, 0.92, 0.85)),
         cast=(1.1, 0.9, 1.15), gamma=0.85, scale=(0.78, 0.90), blur=1.1, view_probs=(0.4, 0.4, 0.2),
         shear=0.06, occlusion="side", occlusion_prob=0.15),
    dict(background="asphalt", palette=((0.22, 0.22, 0.24), (0.90, 0.90, 0.85), (0.40, 0.38, 0.35)),
         cast=(0.8, 0.84, 0.88), gamma=1.2, scale=(0.80, 0.94), blur=0.5, view_probs=(0.25, 0.25, 0.5),
         shear=-0.05, occlusion="bottom", occlusion_prob=0.15),
    dict(background="tiles", palette=((0.55, 0.40, 0.60), (0.85, 0.85, 0.80), (0.35, 0.25, 0.40)),
         cast=(1.2, 1.15, 1.05), gamma=0.9, scale=(0.70, 0.82), blur=0.0, view_probs=(0.45, 0.35, 0.2),
         shear=0.0, occlusion="pole", occlusion_prob=0.1),
)
# The "shifted" domain (a target for domain adaptation), like another city's camera network: other
# scenes (night street, snow, wooden wall, station platform), one shared look of its own (warm dusk
# light, dimmer, hazy, blurrier) and other cameras (smaller people, other viewpoints). Same kinds of
# people. Its cameras differ from each other less than the source's do: the shift is between domains.
_DUSK = dict(cast=(1.12, 0.97, 0.78), gamma=1.15, light=(0.7, 0.95), haze=0.12, haze_rgb=(0.75, 0.65, 0.55))
_SHIFTED_CAMERA_TEMPLATES = (
    dict(_DUSK, background="night", palette=((0.12, 0.12, 0.20), (0.95, 0.82, 0.45), (0.28, 0.27, 0.30)),
         scale=(0.68, 0.80), blur=0.6, view_probs=(0.3, 0.3, 0.4), shear=0.0, occlusion="none", occlusion_prob=0.0),
    dict(_DUSK, background="snow", palette=((0.88, 0.89, 0.92), (0.62, 0.64, 0.70), (0.20, 0.18, 0.16)),
         scale=(0.70, 0.82), blur=0.0, view_probs=(0.5, 0.2, 0.3), shear=0.08, occlusion="pole",
         occlusion_prob=0.15),
    dict(_DUSK, background="planks", palette=((0.55, 0.37, 0.20), (0.35, 0.33, 0.30), (0.20, 0.12, 0.06)),
         scale=(0.78, 0.90), blur=0.4, view_probs=(0.2, 0.5, 0.3), shear=-0.08, occlusion="side",
         occlusion_prob=0.2),
    dict(_DUSK, background="concrete", palette=((0.60, 0.60, 0.58), (0.92, 0.80, 0.10), (0.15, 0.14, 0.13)),
         scale=(0.72, 0.84), blur=0.9, view_probs=(0.35, 0.35, 0.3), shear=0.0, occlusion="bottom",
         occlusion_prob=0.2),
    dict(_DUSK, background="night", palette=((0.20, 0.09, 0.16), (0.95, 0.35, 0.55), (0.22, 0.18, 0.24)),
         scale=(0.82, 0.94), blur=0.0, view_probs=(0.4, 0.2, 0.4), shear=0.1, occlusion="pole", occlusion_prob=0.1),
    dict(_DUSK, background="concrete", palette=((0.75, 0.74, 0.70), (0.95, 0.95, 0.95), (0.30, 0.32, 0.35)),
         scale=(0.68, 0.80), blur=0.7, view_probs=(0.25, 0.5, 0.25), shear=-0.05, occlusion="none",
         occlusion_prob=0.0),
)
# domain name -> camera templates; "source" is the default data (the demo's), "shifted" a target domain
DOMAINS: MappingProxyType[str, tuple[dict, ...]] = MappingProxyType({
    "source": _CAMERA_TEMPLATES, "shifted": _SHIFTED_CAMERA_TEMPLATES,
})


@dataclass
class SyntheticSummary:
    """Counts of what was written (printed by ``omnireid data synth``)."""

    out_dir: str
    num_train_ids: int
    num_test_ids: int
    num_cameras: int
    num_train_images: int
    num_query_images: int
    num_gallery_images: int
    num_distractors: int
    num_junk: int
    folders: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Sampling (sequential, seeded)
# ---------------------------------------------------------------------------------------------
def _jitter_rgb(rng: np.random.Generator, rgb: Sequence[float], amount: float) -> tuple[float, float, float]:
    out = np.clip(np.asarray(rgb) + rng.uniform(-amount, amount, 3), 0.0, 1.0)
    return tuple(float(round(v, 4)) for v in out)  # type: ignore[return-value]


def _sample_identity(rng: np.random.Generator, pid: int, split: str) -> Identity:
    names = list(COLOURS)
    upper = names[rng.integers(len(names))]
    lower = names[rng.integers(len(names))]
    pattern = UPPER_PATTERNS[rng.integers(len(UPPER_PATTERNS))]
    pattern_colour = names[rng.integers(len(names))]
    while pattern_colour == upper:
        pattern_colour = names[rng.integers(len(names))]
    hair = list(HAIR_COLOURS)[rng.integers(len(HAIR_COLOURS))]
    body_type = "slim" if rng.random() < 0.5 else "broad"
    slim = body_type == "slim"
    return Identity(
        pid=pid, split=split,
        upper_colour=upper, upper_rgb=_jitter_rgb(rng, COLOURS[upper], 0.1),
        upper_pattern=pattern, pattern_colour=pattern_colour,
        pattern_rgb=_jitter_rgb(rng, COLOURS[pattern_colour], 0.05),
        sleeves="short" if rng.random() < 0.35 else "long",
        lower_colour=lower, lower_rgb=_jitter_rgb(rng, COLOURS[lower], 0.1),
        lower_style=LOWER_STYLES[rng.choice(3, p=(0.6, 0.25, 0.15) if not slim else (0.4, 0.25, 0.35))],
        hair_colour=hair, hair_rgb=_jitter_rgb(rng, HAIR_COLOURS[hair], 0.04),
        hair_length="long" if rng.random() < (0.65 if slim else 0.15) else "short",
        skin_rgb=_jitter_rgb(rng, SKIN_TONES[rng.integers(len(SKIN_TONES))], 0.03),
        shoe_rgb=_jitter_rgb(rng, (0.12, 0.10, 0.10) if rng.random() < 0.6 else (0.9, 0.9, 0.9), 0.05),
        body_type=body_type,
        height=float(rng.uniform(0.86, 1.0)),
        width=float(rng.uniform(0.78, 0.92) if slim else rng.uniform(1.02, 1.2)),
        leg_ratio=float(rng.uniform(0.42, 0.52)),
        hat=bool(rng.random() < 0.25), hat_rgb=_jitter_rgb(rng, COLOURS[names[rng.integers(len(names))]], 0.05),
        bag=bool(rng.random() < 0.3), bag_rgb=_jitter_rgb(rng, COLOURS[names[rng.integers(len(names))]], 0.05),
        bag_side=int(rng.choice((-1, 1))),
        backpack=bool(rng.random() < 0.3),
        backpack_rgb=_jitter_rgb(rng, COLOURS[names[rng.integers(len(names))]], 0.05),
    )


def _identity_key(identity: Identity) -> tuple:
    """People with equal keys would differ only by accessories: avoided while the key space allows."""
    return (identity.upper_colour, identity.lower_colour, identity.upper_pattern)


def _sample_identities(rng: np.random.Generator, pids: Sequence[int], split: str,
                       taken: set[tuple]) -> list[Identity]:
    """Identities with pairwise different clothing (colours + pattern) while the combinations last."""
    out = []
    for pid in pids:
        for _ in range(1000):
            identity = _sample_identity(rng, pid, split)
            if _identity_key(identity) not in taken:
                break
        taken.add(_identity_key(identity))
        out.append(identity)
    return out


def _make_cameras(rng: np.random.Generator, num_cameras: int, templates: Sequence[dict]) -> list[Camera]:
    cameras = []
    for index in range(num_cameras):
        template = dict(templates[index % len(templates)])
        if index >= len(templates):  # extra cameras: same scene kinds, new conditions
            template["cast"] = tuple(float(c) for c in rng.uniform(0.8, 1.2, 3))
            template["palette"] = tuple(_jitter_rgb(rng, c, 0.2) for c in template["palette"])
            template["gamma"] = float(rng.uniform(0.8, 1.3))
        cameras.append(Camera(index=index + 1, **template))
    return cameras


def _sample_shot(rng: np.random.Generator, filename: str, folder: str, identity: Identity | None,
                 camera: Camera) -> Shot:
    clutter = []
    for _ in range(int(rng.integers(0, 4))):
        x0, y0 = rng.uniform(0, 0.9), rng.uniform(0, 0.9)
        clutter.append((float(x0), float(y0), float(x0 + rng.uniform(0.1, 0.45)),
                        float(y0 + rng.uniform(0.05, 0.3)), int(rng.integers(len(camera.palette)))))
    return Shot(
        filename=filename, folder=folder, identity=identity, camera=camera,
        view=VIEWS[rng.choice(3, p=camera.view_probs)], flip=bool(rng.random() < 0.5),
        scale=float(rng.uniform(*camera.scale)), centre_x=float(rng.uniform(-3.0, 3.0)),
        top_jitter=float(rng.uniform(-3.0, 3.0)), stride=float(rng.uniform(0.0, 0.05)),
        background_shift=(int(rng.integers(0, 64)), int(rng.integers(0, 64))), clutter=tuple(clutter),
        light=float(rng.uniform(*camera.light)),
        shear=float(camera.shear + rng.uniform(-0.04, 0.04)) if camera.shear else 0.0,
        occluded=bool(rng.random() < camera.occlusion_prob), occluder_pos=float(rng.uniform(0.0, 1.0)),
        junk_crop=(float(rng.uniform(-0.6, 0.6)), float(rng.uniform(1.2, 2.5))),
        noise_seed=int(rng.integers(2**31)),
    )


# ---------------------------------------------------------------------------------------------
# Rendering (pure function of a Shot)
# ---------------------------------------------------------------------------------------------
def _brick(yy, xx, shift, c0, c1, c2):
    row = np.floor(yy / 8)
    offset = (row % 2) * 8
    mortar = ((yy % 8) < 1.2) | (((xx + offset) % 16) < 1.2)
    return np.where(mortar[..., None], c1, c0 * (0.9 + 0.2 * ((row * 7 + np.floor((xx + offset) / 16)) % 3 == 0))[..., None])


def _hedge(yy, xx, shift, c0, c1, c2):
    top = (yy - shift[0]) < IMAGE_HEIGHT * 0.55
    leaves = 0.75 + 0.5 * (np.sin(xx * 1.7) * np.cos(yy * 1.3) > 0.3)
    pavement = np.where((((xx + yy * 0.5) % 12) < 1.0)[..., None], c2, c1)
    return np.where(top[..., None], c0 * leaves[..., None], pavement)


def _glass(yy, xx, shift, c0, c1, c2):
    panel = np.floor(xx / 14) % 2
    grad = 0.7 + 0.5 * ((yy % 40) / 40.0)
    frame = (xx % 14) < 1.5
    return np.where(frame[..., None], c1, np.where((panel == 0)[..., None], c0, c2 * 0.8) * grad[..., None])


def _panels(yy, xx, shift, c0, c1, c2):
    h = IMAGE_HEIGHT
    floor = (yy - shift[0]) > h * 0.78
    stripes = 0.85 + 0.2 * ((xx % 10) < 5)
    img = np.where(floor[..., None], c1 + 0 * xx[..., None], c0 * stripes[..., None])
    return np.where(((((yy - shift[0]) > h * 0.76) & ((yy - shift[0]) < h * 0.79)))[..., None], c2, img)


def _asphalt(yy, xx, shift, c0, c1, c2):
    lines = ((((xx - yy * 0.6) % 24) < 2.5) & ((yy % 16) < 9))
    img = np.where(lines[..., None], c1, c0 + 0 * xx[..., None])
    return np.where((((yy - shift[0]) < IMAGE_HEIGHT * 0.2))[..., None], c2, img)


def _tiles(yy, xx, shift, c0, c1, c2):
    checker = ((np.floor(xx / 9) + np.floor(yy / 9)) % 2) == 0
    return np.where(checker[..., None], c0, c1 * 0.9)


def _night(yy, xx, shift, c0, c1, c2):
    """A dark facade with lit windows above a dim street."""
    h = IMAGE_HEIGHT
    windows = ((xx % 13) > 4) & ((yy % 15) > 6) & ((np.floor(xx / 13) * 5 + np.floor(yy / 15) * 3) % 4 != 0)
    img = np.where(windows[..., None], c1, c0 + 0 * xx[..., None])
    return np.where(((yy - shift[0]) > h * 0.7)[..., None], c2, img)


def _snow(yy, xx, shift, c0, c1, c2):
    """Snow-covered ground under a flat sky, with dark tree trunks."""
    h = IMAGE_HEIGHT
    ground = (yy - shift[0]) > h * 0.45
    trunks = ((xx % 23) < 3) & ~ground
    img = np.where(ground[..., None], c0 * (0.95 + 0.05 * np.sin(xx * 0.3 + yy * 0.2))[..., None], c1 + 0 * xx[..., None])
    return np.where(trunks[..., None], c2, img)


def _planks(yy, xx, shift, c0, c1, c2):
    """A wooden wall of vertical planks with dark seams."""
    grain = 0.85 + 0.15 * np.sin(yy * 0.9 + np.floor(xx / 11) * 2.1)
    img = c0 * grain[..., None]
    img = np.where(((xx % 11) < 1.3)[..., None], c2, img)
    return np.where(((yy - shift[0]) > IMAGE_HEIGHT * 0.85)[..., None], c1, img)


def _concrete(yy, xx, shift, c0, c1, c2):
    """A concrete platform with a painted safety line and a dark track bed."""
    h = IMAGE_HEIGHT
    y = yy - shift[0]
    img = c0 * (0.92 + 0.08 * (((xx * 3 + yy * 7) % 17) < 8))[..., None]
    img = np.where(((y > h * 0.62) & (y < h * 0.66))[..., None], c1, img)
    return np.where((y < h * 0.12)[..., None], c2, img)


# background kind -> painter(yy, xx, shift, c0, c1, c2) of the H x W x 3 scene
_BACKGROUND_PAINTERS = MappingProxyType({
    "brick": _brick, "hedge": _hedge, "glass": _glass, "panels": _panels, "asphalt": _asphalt, "tiles": _tiles,
    "night": _night, "snow": _snow, "planks": _planks, "concrete": _concrete,
})


def _background(camera: Camera, shift: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    h, w = IMAGE_HEIGHT, IMAGE_WIDTH
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy += shift[0]
    xx += shift[1]
    c0, c1, c2 = (np.asarray(c, dtype=np.float32) for c in camera.palette)
    img = _BACKGROUND_PAINTERS[camera.background](yy, xx, shift, c0, c1, c2)
    img = img + rng.normal(0.0, 0.03, (h, w, 3)).astype(np.float32)
    return img.astype(np.float32)


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float) -> np.ndarray:
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1.0


def _box(u: np.ndarray, v: np.ndarray, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
    return (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)


def _paint(img: np.ndarray, mask: np.ndarray, rgb: Sequence[float]) -> None:
    img[mask] = np.asarray(rgb, dtype=np.float32)


def _draw_person(img: np.ndarray, person: Identity, shot: Shot, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Paint ``person`` onto ``img`` in body coordinates (u across, v down, in person heights)."""
    view = shot.view
    side = view == "side"
    body = np.zeros(u.shape, dtype=bool)
    torso_half = 0.105 * person.width * (0.68 if side else 1.0)
    torso_top, torso_bottom = 0.15, 1.0 - person.leg_ratio - 0.03
    shoe_top = 0.95

    # backpack seen from the side sits behind the torso (painted first, the torso covers its edge)
    if person.backpack and side:
        pack = _box(u, v, torso_half - 0.01, torso_half + 0.07, torso_top + 0.02, torso_top + 0.26)
        _paint(img, pack, person.backpack_rgb)
        body |= pack
    # long hair falls behind the shoulders
    if person.hair_length == "long":
        hair_back = _box(u, v, -0.07, 0.07, 0.06, 0.24) if view != "front" else (
            _box(u, v, -0.075, -0.045, 0.07, 0.22) | _box(u, v, 0.045, 0.075, 0.07, 0.22))
        _paint(img, hair_back, person.hair_rgb)
        body |= hair_back

    # legs
    leg_half = 0.042 * min(person.width, 1.1)
    if side:
        legs = [(-shot.stride * 1.5, leg_half), (shot.stride * 1.5, leg_half)]
    else:
        gap = 0.046 * person.width + shot.stride * 0.3
        legs = [(-gap, leg_half), (gap, leg_half)]
    leg_mask = np.zeros(u.shape, dtype=bool)
    for centre, half in legs:
        leg_mask |= _box(u, v, centre - half, centre + half, torso_bottom, shoe_top)
    _paint(img, leg_mask, person.skin_rgb)
    cover_bottom = {"trousers": shoe_top, "shorts": torso_bottom + 0.15, "skirt": torso_bottom + 0.2}[person.lower_style]
    if person.lower_style == "skirt":
        spread = (v - torso_bottom) / (cover_bottom - torso_bottom)
        skirt_half = torso_half + 0.01 + 0.05 * np.clip(spread, 0, 1)
        lower_mask = (np.abs(u) <= skirt_half) & (v >= torso_bottom - 0.01) & (v <= cover_bottom)
    else:
        lower_mask = leg_mask & (v <= cover_bottom) | _box(u, v, -torso_half, torso_half, torso_bottom - 0.01,
                                                             torso_bottom + 0.06)
    _paint(img, lower_mask, person.lower_rgb)
    shoes = np.zeros(u.shape, dtype=bool)
    for centre, half in legs:
        shoes |= _box(u, v, centre - half - (0.015 if side else 0.0), centre + half + 0.015, shoe_top, 0.99)
    _paint(img, shoes, person.shoe_rgb)
    body |= leg_mask | lower_mask | shoes

    # torso with its pattern
    torso = _box(u, v, -torso_half, torso_half, torso_top, torso_bottom)
    shoulder = _ellipse(u, v, 0.0, torso_top + 0.02, torso_half, 0.035)
    torso |= shoulder & (v >= torso_top - 0.02)
    upper = np.broadcast_to(np.asarray(person.upper_rgb, dtype=np.float32), img.shape).copy()
    second = np.asarray(person.pattern_rgb, dtype=np.float32)
    if person.upper_pattern == "horizontal_stripes":
        upper[((v * 100.0) % 8.0) < 4.0] = second
    elif person.upper_pattern == "vertical_stripes":
        upper[(((u + 1.0) * 100.0) % 7.0) < 3.5] = second
    elif person.upper_pattern == "checks":
        upper[((np.floor(v * 100.0 / 6.0) + np.floor((u + 1.0) * 100.0 / 6.0)) % 2) == 0] = second
    elif person.upper_pattern == "logo" and view == "front":
        logo = _box(u, v, -0.05, 0.05, torso_top + 0.06, torso_top + 0.15)
        upper[logo] = second
    img[torso] = upper[torso]
    body |= torso

    # arms (sleeves, then skin below a short sleeve)
    arm_top, arm_bottom = torso_top + 0.01, torso_bottom - 0.02
    arm_half = 0.032 * min(person.width, 1.1)
    arm_centres = [0.0 + shot.stride] if side else [-(torso_half + arm_half), torso_half + arm_half]
    for centre in arm_centres:
        arm = _box(u, v, centre - arm_half, centre + arm_half, arm_top, arm_bottom)
        _paint(img, arm, person.skin_rgb)
        sleeve_end = arm_top + (0.11 if person.sleeves == "short" else arm_bottom - arm_top - 0.03)
        sleeve = arm & (v <= sleeve_end)
        _paint(img, sleeve, person.upper_rgb)
        body |= arm

    # backpack: big from the back, straps from the front
    if person.backpack and view == "back":
        pack = _box(u, v, -0.085, 0.085, torso_top + 0.03, torso_top + 0.27)
        _paint(img, pack, person.backpack_rgb)
    elif person.backpack and view == "front":
        for centre in (-0.055, 0.055):
            _paint(img, _box(u, v, centre - 0.012, centre + 0.012, torso_top, torso_top + 0.16), person.backpack_rgb)
    # shoulder bag at the hip with a diagonal strap
    if person.bag:
        side_sign = person.bag_side if view != "back" else -person.bag_side
        if side:
            bag = _box(u, v, -0.06, 0.06, torso_bottom - 0.13, torso_bottom - 0.01)
        else:
            inner = torso_half + 0.005
            lo, hi = (inner, inner + 0.09) if side_sign > 0 else (-inner - 0.09, -inner)
            bag = _box(u, v, lo, hi, torso_bottom - 0.12, torso_bottom + 0.01)
            strap = torso & (np.abs((u * side_sign) - (torso_half - (v - torso_top) * 0.9)) < 0.015)
            _paint(img, strap, person.bag_rgb)
        _paint(img, bag, person.bag_rgb)
        body |= bag

    # head, hair, hat
    head = _ellipse(u, v, 0.0, 0.085, 0.052, 0.068)
    _paint(img, head, person.skin_rgb)
    if view == "back":
        hair = head
    else:
        around_face = (np.abs(u) > 0.035) & (v < 0.11) if view == "front" else (u > 0.02) & (v < 0.12)
        hair = head & ((v < 0.055) | around_face)
    _paint(img, hair, person.hair_rgb)
    neck = _box(u, v, -0.02, 0.02, 0.14, torso_top + 0.01)
    _paint(img, neck, person.skin_rgb)
    body |= head | neck
    if person.hat:
        hat = _ellipse(u, v, 0.0, 0.045, 0.058, 0.04) & (v < 0.06)
        brim = _box(u, v, -0.07 if view != "side" else -0.02, 0.07 if view != "side" else 0.1, 0.05, 0.062)
        _paint(img, hat | brim, person.hat_rgb)
        body |= hat | brim
    return body


def _apply_occlusion(img: np.ndarray, shot: Shot) -> None:
    h, w = IMAGE_HEIGHT, IMAGE_WIDTH
    colour = np.asarray(shot.camera.palette[1], dtype=np.float32) * 0.8
    kind = shot.camera.occlusion
    if kind == "bottom":  # a car bonnet / bench in front of the legs
        top = int(h * (0.62 + 0.15 * shot.occluder_pos))
        img[top:, :] = colour
        img[top:top + 2, :] = colour * 0.5
    elif kind == "pole":  # a lamp post crossing the body
        x0 = int(w * (0.25 + 0.4 * shot.occluder_pos))
        img[:, x0:x0 + 7] = colour * 0.7
    elif kind == "side":  # another pedestrian's shoulder entering the box
        x1 = int(w * (0.18 + 0.15 * shot.occluder_pos))
        img[int(h * 0.15):, :x1] = colour * 0.6


def render_shot(shot: Shot) -> bytes:
    """The JPEG bytes of one image; a pure function of ``shot``."""
    rng = np.random.default_rng(shot.noise_seed)
    h, w = IMAGE_HEIGHT, IMAGE_WIDTH
    camera = shot.camera
    img = _background(camera, shot.background_shift, rng)
    for x0, y0, x1, y1, colour_index in shot.clutter:
        colour = np.asarray(camera.palette[colour_index], dtype=np.float32) * 0.75
        img[int(y0 * h):int(y1 * h), int(x0 * w):int(x1 * w)] = colour

    identity = shot.identity
    if identity is not None:
        ph = h * shot.scale * identity.height
        top = (h - ph) / 2.0 + shot.top_jitter
        if shot.folder == "junk":  # a badly cut detection: shifted and over-zoomed
            top += shot.junk_crop[0] * ph
            ph *= shot.junk_crop[1]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
        u = (xx - (w / 2.0 + shot.centre_x)) / ph
        v = (yy - top) / ph
        body = _draw_person(img, identity, shot, u, v)
        shade = (1.08 - 0.2 * np.clip(v, 0, 1))[..., None]  # light from above
        img = np.where(body[..., None], img * shade, img)
        img[body] += rng.normal(0.0, 0.025, (int(body.sum()), 3)).astype(np.float32)
    if shot.occluded:
        _apply_occlusion(img, shot)
    if camera.haze:
        img = img * (1.0 - camera.haze) + camera.haze * np.asarray(camera.haze_rgb, dtype=np.float32)

    # imaging: illumination, colour cast, gamma
    img = np.clip(img * shot.light * np.asarray(camera.cast, dtype=np.float32), 0.0, 1.0) ** camera.gamma
    pil = Image.fromarray((img * 255.0 + 0.5).astype(np.uint8), mode="RGB")
    if shot.flip:
        pil = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if shot.shear:
        fill = tuple(int(c) for c in np.asarray(pil).reshape(-1, 3).mean(0))
        pil = pil.transform((w, h), Image.Transform.AFFINE, (1.0, shot.shear, -shot.shear * h / 2.0, 0.0, 1.0, 0.0),
                            resample=Image.Resampling.BILINEAR, fillcolor=fill)
    if camera.blur:
        pil = pil.filter(ImageFilter.GaussianBlur(camera.blur))
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# Dataset plan and writer
# ---------------------------------------------------------------------------------------------
class _NameMaker:
    """Market-1501 names ``PPPP_cCsS_FFFFFF_BB.jpg`` with increasing frames per camera sequence."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.frames: dict[tuple[int, int], int] = {}

    def __call__(self, pid: int, cam: int) -> str:
        seq = int(self.rng.integers(1, 7))
        frame = self.frames.get((cam, seq), 0) + int(self.rng.integers(1, 120))
        self.frames[(cam, seq)] = frame
        box = int(self.rng.integers(1, 9))
        pid_text = "-1" if pid < 0 else f"{pid:04d}"
        return f"{pid_text}_c{cam}s{seq}_{frame:06d}_{box:02d}.jpg"


def _identity_shots(rng: np.random.Generator, identity: Identity, cameras: Sequence[Camera],
                    names: _NameMaker, images_per_camera: tuple[int, int], min_cameras: int,
                    folder: str) -> list[list[Shot]]:
    """Shots of one identity grouped per camera (at least ``min_cameras`` cameras)."""
    count = int(rng.integers(min(min_cameras, len(cameras)), len(cameras) + 1))
    chosen = sorted(rng.choice(len(cameras), size=count, replace=False).tolist())
    groups = []
    for index in chosen:
        camera = cameras[index]
        num = int(rng.integers(images_per_camera[0], images_per_camera[1] + 1))
        groups.append([_sample_shot(rng, names(identity.pid, camera.index), folder, identity, camera)
                       for _ in range(num)])
    return groups


def plan_synthetic_reid(seed: int = 0, num_train_ids: int = 200, num_test_ids: int = 200,
                        num_cameras: int = 6, images_per_camera: tuple[int, int] = (2, 4),
                        queries_per_id: int = 3, num_distractors: int = 100,
                        num_junk: int = 30, domain: str = "source") -> tuple[list[Shot], list[Identity]]:
    """Every image to write (with all random choices made) and every identity, from ``seed``.

    ``domain`` (a :data:`DOMAINS` name) picks the cameras; another domain also draws from another
    random stream, so its people are not the source's people under other cameras."""
    if domain not in DOMAINS:
        raise ConfigError(f"unknown synthetic domain {domain!r}; available: {', '.join(DOMAINS)}")
    if not 2 <= num_cameras <= MAX_CAMERAS:
        raise ConfigError(f"num_cameras must be between 2 and {MAX_CAMERAS} (Market-1501 names hold one "
                          f"camera digit), got {num_cameras}")
    if num_train_ids < 1 or num_test_ids < 1:
        raise ConfigError(f"need at least one training and one test identity, got {num_train_ids} and {num_test_ids}")
    if num_train_ids + num_test_ids > 9999:
        raise ConfigError("at most 9999 identities fit Market-1501's four-digit person ids")
    if not 1 <= images_per_camera[0] <= images_per_camera[1]:
        raise ConfigError(f"images_per_camera must be (low, high) with 1 <= low <= high, got {images_per_camera}")
    if queries_per_id < 1:
        raise ConfigError(f"queries_per_id must be at least 1, got {queries_per_id}")
    domain_index = list(DOMAINS).index(domain)
    rng = np.random.default_rng(seed if domain_index == 0 else (seed, domain_index))
    cameras = _make_cameras(rng, num_cameras, DOMAINS[domain])
    pids = rng.permutation(np.arange(1, num_train_ids + num_test_ids + 1))
    train_pids = sorted(int(p) for p in pids[:num_train_ids])
    test_pids = sorted(int(p) for p in pids[num_train_ids:])
    taken: set[tuple] = set()
    train_ids = _sample_identities(rng, train_pids, "train", taken)
    test_ids = _sample_identities(rng, test_pids, "test", taken)
    names = _NameMaker(rng)

    shots: list[Shot] = []
    for identity in train_ids:
        for group in _identity_shots(rng, identity, cameras, names, images_per_camera, 2, "bounding_box_train"):
            shots.extend(group)
    for identity in test_ids:
        groups = _identity_shots(rng, identity, cameras, names, images_per_camera, 2, "bounding_box_test")
        # queries: one image from each of up to ``queries_per_id`` cameras; the rest is gallery, so
        # every query keeps matches from other cameras (each identity is seen by >= 2 cameras).
        query_groups = rng.choice(len(groups), size=min(queries_per_id, len(groups)), replace=False)
        for index, group in enumerate(groups):
            for shot_index, shot in enumerate(group):
                is_query = index in query_groups and shot_index == 0
                shots.append(Shot(**{**_shot_fields(shot), "folder": "query" if is_query else "bounding_box_test"}))
    distractor_pool = _sample_identities(rng, [0] * num_distractors, "distractor", taken)
    for identity in distractor_pool:
        camera = cameras[int(rng.integers(len(cameras)))]
        shots.append(_sample_shot(rng, names(0, camera.index), "bounding_box_test", identity, camera))
    for _ in range(num_junk):
        camera = cameras[int(rng.integers(len(cameras)))]
        source = (train_ids + test_ids)[int(rng.integers(len(train_ids) + len(test_ids)))]
        person = source if rng.random() < 0.7 else None
        shot = _sample_shot(rng, names(-1, camera.index), "junk", person, camera)
        shots.append(shot)
    return shots, train_ids + test_ids


def _shot_fields(shot: Shot) -> dict:
    return {name: getattr(shot, name) for name in Shot.__dataclass_fields__}


def _output_folder(shot: Shot) -> str:
    return "bounding_box_test" if shot.folder == "junk" else shot.folder


def _render_chunk(shots: Sequence[Shot]) -> list[bytes]:
    return [render_shot(shot) for shot in shots]


def write_synthetic_reid(out_dir: str, seed: int = 0, num_train_ids: int = 200, num_test_ids: int = 200,
                         num_cameras: int = 6, images_per_camera: tuple[int, int] = (2, 4),
                         queries_per_id: int = 3, num_distractors: int = 100, num_junk: int = 30,
                         workers: int = 1, domain: str = "source") -> SyntheticSummary:
    """Write the synthetic dataset into ``out_dir`` (Market-1501 layout) and return its counts.

    ``out_dir`` becomes the dataset folder itself: point ``DATASETS.ROOT`` at it and use
    ``DATASETS.NAMES ("Market1501",)``. ``domain="shifted"`` writes the domain-shifted variant (other
    scenes, illumination and cameras; see :data:`DOMAINS`), a target for domain adaptation. Existing files of a previous run are overwritten; stray
    images in the three image folders are an error (they would silently join the dataset).
    """
    shots, identities = plan_synthetic_reid(seed, num_train_ids, num_test_ids, num_cameras, images_per_camera,
                                            queries_per_id, num_distractors, num_junk, domain)
    planned = {(_output_folder(s), s.filename) for s in shots}
    for folder in ("bounding_box_train", "bounding_box_test", "query"):
        path = os.path.join(out_dir, folder)
        os.makedirs(path, exist_ok=True)
        stray = [f for f in os.listdir(path) if (folder, f) not in planned]
        if stray:
            raise OutputError(f"{path} already holds {len(stray)} files this run would not write "
                              f"(e.g. {stray[0]}); write the synthetic data into an empty folder")
    if workers > 1:
        chunks = [shots[i::workers] for i in range(workers)]
        with ProcessPoolExecutor(max_workers=workers) as pool:
            rendered = list(pool.map(_render_chunk, chunks))
        images: list[bytes] = [b""] * len(shots)
        for i, chunk in enumerate(rendered):
            images[i::workers] = chunk
    else:
        images = _render_chunk(shots)
    for shot, data in zip(shots, images):
        with open(os.path.join(out_dir, _output_folder(shot), shot.filename), "wb") as f:
            f.write(data)

    with open(os.path.join(out_dir, "attributes.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=ATTRIBUTE_COLUMNS)
        writer.writeheader()
        for identity in sorted(identities, key=lambda i: i.pid):
            writer.writerow(identity.attributes())

    summary = SyntheticSummary(
        out_dir=out_dir, num_train_ids=num_train_ids, num_test_ids=num_test_ids, num_cameras=num_cameras,
        num_train_images=sum(s.folder == "bounding_box_train" for s in shots),
        num_query_images=sum(s.folder == "query" for s in shots),
        num_gallery_images=sum(_output_folder(s) == "bounding_box_test" for s in shots),
        num_distractors=num_distractors, num_junk=num_junk,
        folders={k: os.path.join(out_dir, k) for k in ("bounding_box_train", "bounding_box_test", "query")},
    )
    with open(os.path.join(out_dir, "README.txt"), "w", encoding="utf-8") as f:
        f.write(
            "omnireid synthetic person re-identification data (Market-1501 layout).\n"
            f"domain={domain} seed={seed} train_ids={num_train_ids} test_ids={num_test_ids} cameras={num_cameras} "
            f"images_per_camera={list(images_per_camera)} queries_per_id={queries_per_id} "
            f"distractors={num_distractors} junk={num_junk}\n"
            f"images: train={summary.num_train_images} query={summary.num_query_images} "
            f"gallery={summary.num_gallery_images} (pid 0000: distractors, pid -1: junk)\n"
            "attributes.csv: one row per identity (train and test splits).\n"
        )
    return summary
