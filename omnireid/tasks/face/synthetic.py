"""Built-in synthetic face data at 112x112, written in every layout the face readers take.

Why: the face demo and tests need identity-labelled faces that exist without a download, that an
untrained network cannot verify well and that a small network learns in minutes on a CPU.

An identity is a drawn face: skin tone, face shape, hair (colour, style), eye spacing / size / iris
colour, eyebrows, nose, mouth, ears, beard, glasses and marks. Every image adds nuisances that the
model must ignore: head rotation and yaw (features shift sideways, the face narrows), position and
scale, expression, lighting direction and strength, colour cast, background, blur, occluders,
sensor noise and JPEG quality. Hard verification pairs use stronger nuisances.

Written by :func:`write_synthetic_faces` into ``out_dir`` (insightface's dataset folder layout plus
an identity-folder tree and a CSV of the same training images)::

    out_dir/
      images/<identity>/<n>.jpg      training identities (identity-folder tree)
      train.csv                      path,identity (paths relative to out_dir)
      train.rec, train.idx, property insightface RecordIO of the same images ("classes,112,112")
      <set>.bin                      verification pairs of held-out identities (insightface .bin)
      README.txt

The output is byte-identical for a seed: every random parameter is drawn in one sequential pass
from ``numpy.random.default_rng(seed)``, images are rendered from those parameters only.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from omnireid.utils.file_io import atomic_write_text

from .recordio import write_insightface_rec
from .verification_bin import write_verification_bin

SIZE = 112
_SUPER = 2  # rendered at 2x then downsampled: anti-aliased edges
_SKIN = ((0.96, 0.82, 0.70), (0.88, 0.68, 0.54), (0.70, 0.50, 0.36), (0.48, 0.32, 0.22), (0.36, 0.24, 0.16))
_HAIR = ((0.08, 0.06, 0.05), (0.35, 0.20, 0.10), (0.80, 0.64, 0.35), (0.62, 0.62, 0.62), (0.55, 0.18, 0.08))
_IRIS = ((0.25, 0.15, 0.08), (0.20, 0.40, 0.70), (0.25, 0.50, 0.30), (0.45, 0.45, 0.45))
HAIR_STYLES = ("short", "long", "bald", "fringe", "bun")
BEARDS = ("none", "stubble", "full", "moustache")
VERIFICATION_SETS = {"synthetic_frontal": 1.0, "synthetic_hard": 1.8}  # name -> nuisance strength


@dataclass(frozen=True)
class FaceIdentity:
    """What makes a face recognisable (all sizes are fractions of the face half-width/half-height)."""

    skin: tuple[float, float, float]
    face_w: float
    face_h: float
    jaw: float  # 0 round .. 1 narrow chin
    hair_rgb: tuple[float, float, float]
    hair_style: str
    hairline: float
    eye_dx: float
    eye_y: float
    eye_size: float
    iris: tuple[float, float, float]
    brow_thickness: float
    brow_tilt: float
    brow_gap: float
    nose_len: float
    nose_w: float
    mouth_w: float
    mouth_y: float
    lip_rgb: tuple[float, float, float]
    ear_size: float
    beard: str
    glasses: bool
    marks: tuple[tuple[float, float, float], ...]  # (x, y, radius) in face coordinates


@dataclass(frozen=True)
class FaceShot:
    """One image of an identity with every nuisance already drawn."""

    identity: FaceIdentity
    angle: float
    yaw: float
    shift: tuple[float, float]
    scale: float
    smile: float
    mouth_open: float
    light_dir: float
    light_strength: float
    brightness: float
    cast: tuple[float, float, float]
    background: tuple[tuple[float, float, float], tuple[float, float, float]]
    blur: float
    occluder: tuple[float, float, float, float, float] | None  # x0, y0, x1, y1 (fractions), grey level
    noise: float
    noise_seed: int
    quality: int


def _jitter(rng: np.random.Generator, rgb, amount: float) -> tuple[float, float, float]:
    return tuple(float(np.clip(c + rng.normal(0, amount), 0, 1)) for c in rgb)


def sample_identity(rng: np.random.Generator) -> FaceIdentity:
    skin = _jitter(rng, _SKIN[rng.integers(len(_SKIN))], 0.04)
    return FaceIdentity(
        skin=skin, face_w=float(rng.uniform(0.78, 1.0)), face_h=float(rng.uniform(1.05, 1.32)),
        jaw=float(rng.uniform(0, 1)), hair_rgb=_jitter(rng, _HAIR[rng.integers(len(_HAIR))], 0.05),
        hair_style=HAIR_STYLES[rng.integers(len(HAIR_STYLES))], hairline=float(rng.uniform(0.45, 0.75)),
        eye_dx=float(rng.uniform(0.30, 0.48)), eye_y=float(rng.uniform(-0.22, -0.02)),
        eye_size=float(rng.uniform(0.09, 0.16)), iris=_jitter(rng, _IRIS[rng.integers(len(_IRIS))], 0.05),
        brow_thickness=float(rng.uniform(0.03, 0.09)), brow_tilt=float(rng.uniform(-0.12, 0.12)),
        brow_gap=float(rng.uniform(0.12, 0.24)), nose_len=float(rng.uniform(0.18, 0.36)),
        nose_w=float(rng.uniform(0.08, 0.18)), mouth_w=float(rng.uniform(0.22, 0.42)),
        mouth_y=float(rng.uniform(0.40, 0.60)), lip_rgb=_jitter(rng, (0.70, 0.30, 0.30), 0.08),
        ear_size=float(rng.uniform(0.14, 0.26)), beard=BEARDS[rng.integers(len(BEARDS))] if rng.random() < 0.5 else "none",
        glasses=bool(rng.random() < 0.2),
        marks=tuple((float(rng.uniform(-0.6, 0.6)), float(rng.uniform(-0.4, 0.7)), float(rng.uniform(0.02, 0.05)))
                    for _ in range(int(rng.integers(0, 3)))),
    )


def sample_shot(rng: np.random.Generator, identity: FaceIdentity, strength: float = 1.0) -> FaceShot:
    s = strength
    grey = float(rng.uniform(0.1, 0.9))
    occluder = None
    if rng.random() < 0.08 * s:
        x0, y0 = float(rng.uniform(0.0, 0.7)), float(rng.uniform(0.45, 0.8))
        occluder = (x0, y0, x0 + float(rng.uniform(0.2, 0.4)), min(1.0, y0 + float(rng.uniform(0.15, 0.35))), grey)
    return FaceShot(
        identity=identity, angle=float(rng.normal(0, 7 * s)), yaw=float(np.clip(rng.normal(0, 0.25 * s), -0.7, 0.7)),
        shift=(float(rng.normal(0, 0.03 * s)), float(rng.normal(0, 0.03 * s))),
        scale=float(np.exp(rng.normal(0, 0.05 * s))), smile=float(rng.uniform(-0.3, 1.0)),
        mouth_open=float(max(0.0, rng.normal(0, 0.3))), light_dir=float(rng.uniform(-1, 1)),
        light_strength=float(min(0.9, abs(rng.normal(0, 0.25 * s)))), brightness=float(np.exp(rng.normal(0, 0.15 * s))),
        cast=tuple(float(np.exp(rng.normal(0, 0.06 * s))) for _ in range(3)),
        background=(tuple(float(v) for v in rng.uniform(0, 1, 3)), tuple(float(v) for v in rng.uniform(0, 1, 3))),
        blur=float(max(0.0, rng.normal(0, 0.6 * s))), occluder=occluder, noise=float(rng.uniform(0, 0.03 * s)),
        noise_seed=int(rng.integers(2**31)), quality=int(rng.integers(70, 96)),
    )


def _rgb(c, gain: float = 1.0) -> tuple[int, int, int]:
    return tuple(int(np.clip(v * gain * 255, 0, 255)) for v in c)


def render_face(shot: FaceShot) -> bytes:
    """The JPEG bytes of one shot."""
    p, n = shot.identity, SIZE * _SUPER
    top, bottom = shot.background
    ramp = np.linspace(0, 1, n)[:, None, None]
    canvas = (np.asarray(top)[None, None] * (1 - ramp) + np.asarray(bottom)[None, None] * ramp) * np.ones((1, n, 1))
    img = Image.fromarray((canvas * 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    unit = n * 0.27 * shot.scale
    cx = n / 2 + shot.shift[0] * n + shot.yaw * unit * 0.25
    cy = n / 2 + shot.shift[1] * n + unit * 0.08
    rx, ry = unit * p.face_w * (1 - 0.25 * abs(shot.yaw)), unit * p.face_h
    feature_dx = shot.yaw * rx * 0.45  # features move towards the side the head turns to

    def at(x: float, y: float) -> tuple[float, float]:
        return cx + feature_dx * (1 - abs(x) * 0.5) + x * rx, cy + y * ry

    def ellipse(x: float, y: float, w: float, h: float, colour, **kw) -> None:
        (ux, uy) = at(x, y)
        draw.ellipse([ux - w * rx, uy - h * ry, ux + w * rx, uy + h * ry], fill=colour, **kw)

    hair = _rgb(p.hair_rgb)
    if p.hair_style in ("long", "bun"):
        draw.ellipse([cx - rx * 1.2, cy - ry * 1.15, cx + rx * 1.2, cy + ry * (1.1 if p.hair_style == "long" else 0.2)],
                     fill=hair)
    skin = _rgb(p.skin)
    for side in (-1, 1):  # ears, the far one hidden by yaw
        if side * shot.yaw < 0.45:
            ex, ey = cx + side * rx * 0.98, cy - ry * 0.05
            draw.ellipse([ex - p.ear_size * rx, ey - p.ear_size * ry * 1.4, ex + p.ear_size * rx,
                          ey + p.ear_size * ry * 1.4], fill=_rgb(p.skin, 0.9))
    chin = ry * (1.0 + 0.15 * p.jaw)
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry * 0.6], fill=skin)
    draw.polygon([(cx - rx * 0.97, cy), (cx + rx * 0.97, cy), (cx + rx * (0.55 - 0.3 * p.jaw), cy + chin * 0.85),
                  (cx, cy + chin), (cx - rx * (0.55 - 0.3 * p.jaw), cy + chin * 0.85)], fill=skin)
    if p.hair_style != "bald":
        line = cy - ry * p.hairline
        draw.chord([cx - rx * 1.05, cy - ry * 1.12, cx + rx * 1.05, line + (line - (cy - ry * 1.12))], 180, 360,
                   fill=hair)
        if p.hair_style == "fringe":
            draw.rectangle([cx - rx * 0.8, line - ry * 0.1, cx + rx * 0.5, line + ry * 0.18], fill=hair)
        if p.hair_style == "bun":
            draw.ellipse([cx - rx * 0.35, cy - ry * 1.5, cx + rx * 0.35, cy - ry * 0.95], fill=hair)
    if p.beard in ("stubble", "full"):
        shade = _rgb(p.hair_rgb) if p.beard == "full" else _rgb(p.skin, 0.72)
        ellipse(0, 0.68, 0.62, 0.36, shade)
    for (mx, my, mr) in p.marks:
        ellipse(mx, my * 0.8, mr, mr * rx / ry, _rgb(p.skin, 0.45))
    for side in (-1, 1):
        ex, ey = side * p.eye_dx, p.eye_y
        ellipse(ex, ey, p.eye_size * 1.3, p.eye_size * 0.55, (245, 245, 240))
        ellipse(ex + shot.yaw * 0.05, ey, p.eye_size * 0.55, p.eye_size * 0.5, _rgb(p.iris))
        ellipse(ex + shot.yaw * 0.05, ey, p.eye_size * 0.25, p.eye_size * 0.25, (10, 10, 10))
        bx0, by = at(ex - side * p.eye_size * 1.4, ey - p.brow_gap + side * p.brow_tilt * 0.3)
        bx1, by1 = at(ex + side * p.eye_size * 1.5, ey - p.brow_gap - side * p.brow_tilt * 0.3)
        draw.line([bx0, by, bx1, by1], fill=_rgb(p.hair_rgb, 0.8), width=max(1, int(p.brow_thickness * ry)))
        if p.glasses:
            gx, gy = at(ex, ey)
            w = p.eye_size * 2.2 * rx
            draw.rectangle([gx - w, gy - w * 0.7, gx + w, gy + w * 0.7], outline=(20, 20, 25), width=max(2, n // 90))
    nx, ny = at(0, p.eye_y + 0.08)
    tip_x, tip_y = at(shot.yaw * 0.25, p.eye_y + 0.08 + p.nose_len)
    draw.polygon([(nx, ny), (tip_x - p.nose_w * rx, tip_y), (tip_x + p.nose_w * rx, tip_y)], fill=_rgb(p.skin, 0.82))
    mx, my = at(0, p.mouth_y)
    mw, curve = p.mouth_w * rx, shot.smile * 0.08 * ry
    open_h = shot.mouth_open * 0.08 * ry
    if p.beard == "moustache":
        draw.rectangle([mx - mw * 0.9, my - ry * 0.12, mx + mw * 0.9, my - ry * 0.04], fill=hair)
    draw.chord([mx - mw, my - curve - open_h - 2, mx + mw, my + curve + open_h + 2], 0, 180, fill=_rgb(p.lip_rgb))
    if open_h > 1:
        draw.ellipse([mx - mw * 0.6, my - open_h * 0.5, mx + mw * 0.6, my + open_h], fill=(60, 20, 25))
    img = img.rotate(shot.angle, resample=Image.BILINEAR, center=(cx, cy), fillcolor=_rgb(top))
    if shot.occluder is not None:
        x0, y0, x1, y1, level = shot.occluder
        ImageDraw.Draw(img).rectangle([x0 * n, y0 * n, x1 * n, y1 * n], fill=_rgb((level, level * 0.9, level * 0.8)))
    img = img.resize((SIZE, SIZE), Image.LANCZOS)
    if shot.blur > 0.05:
        img = img.filter(ImageFilter.GaussianBlur(shot.blur))
    pixels = np.asarray(img, dtype=np.float32) / 255.0
    light = 1.0 + shot.light_strength * shot.light_dir * np.linspace(-1, 1, SIZE)[None, :, None]
    pixels = pixels * light * shot.brightness * np.asarray(shot.cast)[None, None]
    pixels += np.random.default_rng(shot.noise_seed).normal(0, shot.noise, pixels.shape)
    out = Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))
    buffer = io.BytesIO()
    out.save(buffer, format="JPEG", quality=shot.quality)
    return buffer.getvalue()


@dataclass
class SyntheticFaceSummary:
    """What :func:`write_synthetic_faces` wrote."""

    out_dir: str
    num_train_ids: int
    num_train_images: int
    verification_sets: dict[str, int] = field(default_factory=dict)  # name -> pairs


def write_synthetic_faces(out_dir: str, seed: int = 0, num_train_ids: int = 100, images_per_id: int = 16,
                          num_test_ids: int = 100, num_pairs: int = 400,
                          sets: dict[str, float] | None = None) -> SyntheticFaceSummary:
    """Render the training identities and the verification pairs into ``out_dir`` (see the module)."""
    sets = dict(VERIFICATION_SETS if sets is None else sets)
    if num_train_ids < 1 or images_per_id < 2 or num_test_ids < 2 or num_pairs < 20 or num_pairs % 2:
        raise ValueError("need >= 1 training identity, >= 2 images each, >= 2 test identities and an even "
                         f"number of >= 20 pairs; got {num_train_ids}, {images_per_id}, {num_test_ids}, {num_pairs}")
    rng = np.random.default_rng(seed)
    train_ids = [sample_identity(rng) for _ in range(num_train_ids)]
    test_ids = [sample_identity(rng) for _ in range(num_test_ids)]
    train_shots = [(label, sample_shot(rng, identity)) for label, identity in enumerate(train_ids)
                   for _ in range(images_per_id)]
    pair_plans: dict[str, list[tuple[FaceShot, FaceShot, bool]]] = {}
    folds = 10
    for name, strength in sets.items():
        plan = []
        per_fold = num_pairs // folds
        for fold in range(folds):
            count = per_fold + (1 if fold < num_pairs % folds else 0)
            for k in range(count):
                same = k < count // 2
                a = int(rng.integers(num_test_ids))
                b = a if same else int((a + rng.integers(1, num_test_ids)) % num_test_ids)
                plan.append((sample_shot(rng, test_ids[a], strength), sample_shot(rng, test_ids[b], strength), same))
        pair_plans[name] = plan

    os.makedirs(out_dir, exist_ok=True)
    rows, records = [], []
    for n, (label, shot) in enumerate(train_shots):
        relative = os.path.join("images", f"{label:05d}", f"{n % images_per_id:03d}.jpg")
        data = render_face(shot)
        path = os.path.join(out_dir, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        rows.append((relative, f"{label:05d}"))
        records.append((data, label))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("path", "identity"))
    writer.writerows(rows)
    atomic_write_text(os.path.join(out_dir, "train.csv"), buffer.getvalue())
    write_insightface_rec(os.path.join(out_dir, "train.rec"), records)
    atomic_write_text(os.path.join(out_dir, "property"), f"{num_train_ids},{SIZE},{SIZE}\n")
    summary = SyntheticFaceSummary(out_dir, num_train_ids, len(train_shots))
    for name, plan in pair_plans.items():
        images = [render_face(shot) for a, b, _ in plan for shot in (a, b)]
        write_verification_bin(os.path.join(out_dir, f"{name}.bin"), images, [same for _, _, same in plan])
        summary.verification_sets[name] = len(plan)
    atomic_write_text(os.path.join(out_dir, "README.txt"), (
        f"omnireid synthetic faces (seed {seed}): {num_train_ids} training identities x {images_per_id} images at "
        f"{SIZE}x{SIZE} in images/<identity>/, train.csv and train.rec/.idx; verification pairs of "
        f"{num_test_ids} other identities: " + ", ".join(f"{k}.bin ({v} pairs)" for k, v in
                                                         summary.verification_sets.items()) + "\n"))
    return summary
