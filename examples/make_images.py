"""Rebuild the bundled image set in examples/images/ (sources and licences: examples/images/SOURCES.md).

    python examples/make_images.py          # rewrites examples/images/{train,val,smooth}; nothing is downloaded

* ``train/``  — training images: scikit-image sample images shipped inside the scikit-image wheel, plus
  procedurally generated colour images (``synthetic_*.png``: smooth random colour fields, gradients and hue
  sweeps, flat shapes) so that training sees saturated colours and flat regions;
* ``val/``    — held-out natural images (evaluation only: no crop of them is in ``train/``);
* ``reference.png`` — the reference of the SRFlow latent tools (examples/srflow_latents.toml): a texture, never
  trained on;
* ``smooth/`` — held-out smooth and saturated images (a colour wheel, gradients, flat regions) that show whether
  a model shifts colours.

Every image is a pure function of the installed scikit-image data and fixed seeds, so the script reproduces the
committed files.
"""

from __future__ import annotations

import argparse
import colorsys
from pathlib import Path
from typing import Callable

import imageio.v3 as iio
import numpy as np
from skimage import data
from skimage.transform import rescale

Array = np.ndarray

# scikit-image sample images (all shipped in the wheel; see SOURCES.md): name -> (loader, downscale factor)
TRAIN_NATURAL: dict[str, tuple[Callable[[], Array], int]] = {
    "astronaut": (data.astronaut, 1),
    "rocket": (data.rocket, 1),
    "immunohistochemistry": (data.immunohistochemistry, 1),
    "hubble_deep_field": (data.hubble_deep_field, 2),
    "retina": (data.retina, 4),
    "brick": (data.brick, 1),
    "grass": (data.grass, 1),
    "gravel": (data.gravel, 1),
    "coins": (data.coins, 1),
    "text": (data.text, 1),
    "cell": (data.cell, 1),
    "clock": (data.clock, 1),
    "horse": (data.horse, 1),
}
# held-out natural images: name -> (loader, (top, left, height, width) of the crop kept; small, so that evaluation
# takes seconds on a CPU)
EVAL_NATURAL: dict[str, tuple[Callable[[], Array], tuple[int, int, int, int]]] = {
    "chelsea": (data.chelsea, (0, 32, 256, 320)),
    "coffee": (data.coffee, (0, 160, 320, 320)),
    "camera": (data.camera, (40, 120, 320, 320)),
}


def to_uint8(img: Array) -> Array:
    """Float in [0, 1] (or bool, or uint8) -> uint8; RGBA is composited onto white."""
    if img.dtype == bool:
        return np.where(img, 255, 0).astype(np.uint8)
    if img.dtype != np.uint8:
        img = np.clip(np.rint(np.asarray(img, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    if img.ndim == 3 and img.shape[-1] == 4:
        alpha = img[..., 3:4].astype(np.float64) / 255.0
        img = np.rint(img[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return img


def downscale(img: Array, factor: int) -> Array:
    if factor == 1:
        return img
    channel_axis = -1 if img.ndim == 3 else None
    return rescale(img.astype(np.float64) / 255.0, 1.0 / factor, anti_aliasing=True, channel_axis=channel_axis)


def hsv(h: Array, s: Array, v: Array) -> Array:
    """Vectorised HSV -> RGB (all in [0, 1]); returns (..., 3)."""
    h = np.mod(h, 1.0) * 6.0
    i = np.floor(h).astype(int) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.zeros(h.shape + (3,))
    for k, (r, g, b) in enumerate(table):
        m = i == k
        out[m] = np.stack([r[m], g[m], b[m]], -1)
    return out


def random_colour(rng: np.random.Generator) -> Array:
    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.35, 1.0)))


def grid(h: int, w: int) -> tuple[Array, Array]:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return y / (h - 1), x / (w - 1)


def smooth_field(rng: np.random.Generator, size: int = 256) -> Array:
    """Random colours on a coarse grid, interpolated smoothly (cubic) to full size."""
    from scipy.ndimage import zoom

    n = int(rng.integers(3, 7))
    coarse = np.stack([random_colour(rng) for _ in range(n * n)]).reshape(n, n, 3)
    return np.clip(zoom(coarse, (size / n, size / n, 1), order=3, mode="nearest")[:size, :size], 0, 1)


def linear_gradient(rng: np.random.Generator, size: int = 256) -> Array:
    """Two or three random colours blended along a random direction."""
    y, x = grid(size, size)
    angle = rng.uniform(0, 2 * np.pi)
    t = np.cos(angle) * x + np.sin(angle) * y
    t = (t - t.min()) / (t.max() - t.min())
    stops = [random_colour(rng) for _ in range(int(rng.integers(2, 4)))]
    pos = np.linspace(0, 1, len(stops))
    return np.stack([np.interp(t, pos, [c[k] for c in stops]) for k in range(3)], -1)


def hue_sweep(rng: np.random.Generator, size: int = 256) -> Array:
    """Hue along one random direction, saturation or value along the other."""
    y, x = grid(size, size)
    angle = rng.uniform(0, 2 * np.pi)
    u = np.cos(angle) * x + np.sin(angle) * y
    v = -np.sin(angle) * x + np.cos(angle) * y
    v = (v - v.min()) / (v.max() - v.min())
    hue = rng.random() + rng.uniform(0.3, 1.0) * u
    if rng.random() < 0.5:
        return hsv(hue, 0.3 + 0.7 * v, np.full_like(v, rng.uniform(0.7, 1.0)))
    return hsv(hue, np.full_like(v, rng.uniform(0.7, 1.0)), 0.3 + 0.7 * v)


def shapes(rng: np.random.Generator, size: int = 256, supersample: int = 4) -> Array:
    """Flat-coloured circles, rectangles and triangles on a gradient (anti-aliased by supersampling)."""
    big = size * supersample
    img = np.kron(linear_gradient(rng, size), np.ones((supersample, supersample, 1)))
    y, x = np.mgrid[0:big, 0:big].astype(np.float64) / big
    for _ in range(int(rng.integers(6, 13))):
        colour = random_colour(rng)
        kind = rng.integers(0, 3)
        cy, cx = rng.random(2)
        r = rng.uniform(0.05, 0.25)
        if kind == 0:
            mask = (y - cy) ** 2 + (x - cx) ** 2 < r**2
        elif kind == 1:
            mask = (np.abs(y - cy) < r) & (np.abs(x - cx) < rng.uniform(0.05, 0.25))
        else:
            pts = rng.random((3, 2))
            mask = np.ones_like(y, dtype=bool)
            for a, b in ((0, 1), (1, 2), (2, 0)):  # inside: on the same side of each edge as the third vertex
                (y0, x0), (y1, x1), (yc, xc) = pts[a], pts[b], pts[3 - a - b]
                side = (x1 - x0) * (y - y0) - (y1 - y0) * (x - x0)
                mask &= side * np.sign((x1 - x0) * (yc - y0) - (y1 - y0) * (xc - x0)) > 0
        img[mask] = colour
    return img.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))


def eval_wheel(size: int = 256) -> Array:
    """A colour wheel: hue by angle, saturation by radius, white outside the disc."""
    y, x = grid(size, size)
    dy, dx = y - 0.5, x - 0.5
    radius = np.sqrt(dy**2 + dx**2) / 0.45
    wheel = hsv(np.arctan2(dy, dx) / (2 * np.pi), np.clip(radius, 0, 1), np.ones_like(x))
    return np.where((radius <= 1)[..., None], wheel, 1.0)


def eval_gradient(h: int = 224, w: int = 320) -> Array:
    """A full-saturation rainbow left to right, darkening to the bottom."""
    y, x = grid(h, w)
    return hsv(x * 0.95, np.ones_like(x), 1.0 - 0.6 * y)


def eval_sky(size: int = 192) -> Array:
    """A smooth vertical two-colour gradient (deep blue to orange) with a faint horizontal tint."""
    y, x = grid(size, size)
    top, bottom = np.array([0.05, 0.15, 0.55]), np.array([1.0, 0.55, 0.1])
    img = top * (1 - y[..., None]) + bottom * y[..., None]
    return np.clip(img + 0.08 * (x[..., None] - 0.5) * np.array([1.0, 0.0, -1.0]), 0, 1)


def eval_flat(rows: int = 4, cols: int = 6, patch: int = 40) -> Array:
    """A colour chart: flat saturated patches (hue along the columns, value along the rows) on mid grey."""
    border = 8
    h, w = rows * patch + (rows + 1) * border, cols * patch + (cols + 1) * border
    img = np.full((h, w, 3), 0.5)
    for r in range(rows):
        for c in range(cols):
            colour = colorsys.hsv_to_rgb(c / cols + 0.04, 1.0 - 0.15 * (r % 2), 1.0 - 0.2 * r)
            y0, x0 = border + r * (patch + border), border + c * (patch + border)
            img[y0 : y0 + patch, x0 : x0 + patch] = colour
    return img


def reference_texture(tiles: int = 4, size: int = 384) -> Array:
    """The latent tools' reference image (``reference.png``, not trained on): scikit-image's CC0 retina
    ``microaneurysms`` (102 x 102 px, grey), its contrast stretched (1st-99th percentile to 0-255), tiled ``tiles`` x
    ``tiles`` with every other tile mirrored, so the texture runs on without seams, cropped to ``size`` x ``size``
    (large enough for every held-out image)."""
    grey = data.microaneurysms().astype(np.float64)
    lo, hi = np.percentile(grey, [1, 99])
    tile = to_uint8(np.clip((grey - lo) / (hi - lo), 0, 1))
    row = np.concatenate([tile if i % 2 == 0 else tile[:, ::-1] for i in range(tiles)], 1)
    full = np.concatenate([row if i % 2 == 0 else row[::-1] for i in range(tiles)], 0)
    return np.repeat(full[:size, :size, None], 3, -1)


def write(path: Path, img: Array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, to_uint8(img))
    print(f"{path}  {img.shape[1]}x{img.shape[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "images", help="output folder")
    args = parser.parse_args()
    out: Path = args.out
    for sub in ("train", "val", "smooth"):
        for old in (out / sub).glob("*.png"):
            old.unlink()
    for name, (load, factor) in TRAIN_NATURAL.items():
        write(out / "train" / f"{name}.png", downscale(to_uint8(load()), factor))
    rng = np.random.default_rng(20240611)
    makers = [smooth_field, linear_gradient, hue_sweep, shapes]
    for i in range(12):
        write(out / "train" / f"synthetic_{i:02d}.png", makers[i % len(makers)](rng))
    for name, (load, (top, left, h, w)) in EVAL_NATURAL.items():
        write(out / "val" / f"{name}.png", load()[top : top + h, left : left + w])
    write(out / "smooth" / "wheel.png", eval_wheel())
    write(out / "smooth" / "gradient.png", eval_gradient())
    write(out / "smooth" / "sky.png", eval_sky())
    write(out / "smooth" / "flat.png", eval_flat())
    write(out / "reference.png", reference_texture())


if __name__ == "__main__":
    main()
