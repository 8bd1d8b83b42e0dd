"""A synthetic, download-free aerial dataset in the DOTA format ("aerial"), for oriented detection.

:func:`make_aerial` renders large top-down scenes (800-1400 pixels a side, never square)
of textured ground (fields with crop rows, roads with lane markings, water with a coast
line) crowded with small, arbitrarily rotated objects of six DOTA classes, and writes
them as DOTA folders:

=================  ==============================================================  ===========
class              look                                                            long side
=================  ==============================================================  ===========
plane              fuselage with a pointed nose, swept wings, tail plane, shadow   30-60 px
small-vehicle      rounded body, dark windshield and rear window, shadow           12-20 px
large-vehicle      cab and a longer ribbed trailer                                 26-50 px
ship               hull with a pointed bow, superstructure or containers           24-60 px
tennis-court       coloured court with white lines and a net, in a surround        36-60 px
storage-tank       round, shaded roof with a rim, axis-aligned box, shadow         16-48 px
=================  ==============================================================  ===========

(``AERIAL_CLASSES`` keeps DOTA v1.0's relative order.) Objects come in groups, which
makes them dense: parking lots with rows of cars, truck lots, traffic along the roads,
piers with moored ships and ships at sea, aprons with rows of planes, tank farms, groups
of tennis courts, plus scattered objects; objects do not overlap and lie wholly inside
the image. An object is marked difficult (flag 1) when it is very small (a car shorter
than 13 px) or drawn at low contrast (about 5 % of objects, faded into the ground).

Labels are the oriented boxes' corner polygons, in the order of
:func:`lsnet.ops.rotated_boxes.obb_to_poly` (box-local (-w/2, -h/2), (w/2, -h/2),
(w/2, h/2), (-w/2, h/2), with w along the object's length): a clockwise walk on screen.
Storage tanks have angle 0 (axis-aligned squares around the circle), like DOTA's, which
is why :data:`lsnet.rotated.dota.DOTA_RECT_CLASSES` rotates them only by multiples of 90
degrees.

Layout written under ``root``::

    root/classes.txt                       the six class names, one per line
    root/train/images/P0000.png ...        root/train/labelTxt/P0000.txt ...
    root/val/images/P0000.png ...          root/val/labelTxt/P0000.txt ...
    root/aerial.json                       the generation parameters (written last)

Everything depends only on ``seed``: each image draws from its own
``numpy.random.Generator`` seeded with ``(seed, split, index)`` (as
:mod:`lsnet.dense.shapes`), so a seed gives byte-identical files whatever the number of
worker processes, and the first ``n`` images of a split do not depend on how many are
asked for.

Sizes and the proposed small preset
-----------------------------------
The default set (24 train + 8 val images, about 1.1 Mpx and some 150-250 objects each)
renders in well under a minute on two cores. Proposed split for a small CPU preset:
``split_dota(root / "train", ..., patch_size=512, gap=128)`` (stride 384; every image
gives 9-16 patches, about 300 training patches of 512 x 512 with some 20 objects each):
objects of 12-60 px need no resizing, and an Oriented R-CNN with a small backbone sees
each training patch several times in about 15 minutes on a CPU. ``patch_size=256,
gap=64`` is the faster, coarser alternative (about 4x the patches, 4x cheaper each).

:func:`make_aerial_crops` writes single-object 64 x 64 crops of the same classes plus
``background`` in ImageFolder layout (``root/{train,val}/<class>/0000000.png``), readable
by ``lsnet train --data root``, to pre-train a backbone on the objects' appearance.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.writing import output_folder, worker_pool, write_text_atomic
from ..engine.report import progress_bar
from ..errors import ConfigError
from .dota import write_dota_labels

__all__ = [
    "AERIAL_CLASSES",
    "AERIAL_CROP_CLASSES",
    "SMALL_PRESET_SPLIT",
    "is_generated",
    "make_aerial",
    "make_aerial_crops",
    "render_aerial_crop",
    "render_aerial_scene",
]

#: The classes of the synthetic set, in DOTA v1.0's relative order (label i = AERIAL_CLASSES[i]).
AERIAL_CLASSES = ("plane", "small-vehicle", "large-vehicle", "ship", "tennis-court", "storage-tank")

#: Folders of :func:`make_aerial_crops`: the object classes and "background".
AERIAL_CROP_CLASSES = AERIAL_CLASSES + ("background",)

#: The proposed split of the synthetic set for the small CPU preset.
SMALL_PRESET_SPLIT = {"patch_size": 512, "gap": 128}

_PLANE, _CAR, _TRUCK, _SHIP, _COURT, _TANK = range(6)
_VERSION = 1
_SS = 2  # sub-samples per pixel side, for anti-aliased edges

_FIELD_COLOURS = np.array([
    [96, 122, 62], [118, 138, 74], [78, 104, 56], [140, 132, 90], [152, 138, 104], [124, 110, 82],
    [108, 116, 88], [166, 156, 120], [90, 96, 70], [134, 146, 98],
], dtype=np.float64)
_CAR_COLOURS = np.array([
    [235, 235, 232], [30, 32, 36], [160, 162, 166], [180, 40, 36], [40, 70, 150], [110, 112, 118],
    [220, 210, 190], [60, 90, 60], [200, 160, 40],
], dtype=np.float64)
_SHIP_COLOURS = np.array([
    [225, 225, 222], [70, 78, 92], [150, 50, 45], [40, 60, 100], [190, 190, 185], [60, 60, 60],
], dtype=np.float64)
_COURT_COLOURS = np.array([[60, 120, 80], [50, 90, 150], [170, 90, 60], [90, 140, 90]], dtype=np.float64)


# --------------------------------------------------------------------------- painting helpers


class _Frame:
    """Sub-sample coordinates of a window around an object: ``u`` along its length
    (direction ``theta``), ``v`` across it; arrays ``(hh, ww, SS*SS)``."""

    def __init__(self, shape, cx: float, cy: float, theta: float, radius: float, dx: float = 0.0, dy: float = 0.0):
        h, w = shape[:2]
        cx, cy = cx + dx, cy + dy
        self.x0, self.x1 = max(math.floor(cx - radius) - 1, 0), min(math.ceil(cx + radius) + 2, w)
        self.y0, self.y1 = max(math.floor(cy - radius) - 1, 0), min(math.ceil(cy + radius) + 2, h)
        self.empty = self.x0 >= self.x1 or self.y0 >= self.y1
        if self.empty:
            return
        off = (np.arange(_SS) + 0.5) / _SS
        sx = (np.arange(self.x0, self.x1)[:, None] + off[None, :]).reshape(-1)
        sy = (np.arange(self.y0, self.y1)[:, None] + off[None, :]).reshape(-1)
        ddx = sx[None, :] - cx
        ddy = sy[:, None] - cy
        c, s = math.cos(theta), math.sin(theta)
        u = ddx * c + ddy * s
        v = -ddx * s + ddy * c
        hh, ww = self.y1 - self.y0, self.x1 - self.x0
        # (hh*SS, ww*SS) -> (hh, ww, SS*SS)
        self.u = u.reshape(hh, _SS, ww, _SS).transpose(0, 2, 1, 3).reshape(hh, ww, _SS * _SS)
        self.v = v.reshape(hh, _SS, ww, _SS).transpose(0, 2, 1, 3).reshape(hh, ww, _SS * _SS)

    def region(self, img):
        return img[self.y0:self.y1, self.x0:self.x1]


def _paint(img, frame: _Frame, mask, colour, alpha: float = 1.0) -> None:
    """Blend ``colour`` (RGB, or per-pixel ``(hh, ww, 3)``) over the covered part of ``mask``."""
    if frame.empty:
        return
    cov = mask.mean(axis=-1) * alpha
    region = frame.region(img)
    region += cov[..., None] * (np.asarray(colour, dtype=np.float64) - region)


def _darken(img, frame: _Frame, mask, factor: float) -> None:
    """Multiply the covered part of ``mask`` by ``factor`` (a shadow)."""
    if frame.empty:
        return
    cov = mask.mean(axis=-1)
    frame.region(img)[...] *= (1.0 - cov * (1.0 - factor))[..., None]


def _smooth(rng, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth noise ``(h, w)`` in about -1..1: a ``cells`` x ``cells`` random grid, bilinear."""
    grid = rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1))
    ys = np.linspace(0.0, cells, h)
    xs = np.linspace(0.0, cells, w)
    y0 = np.minimum(ys.astype(int), cells - 1)
    x0 = np.minimum(xs.astype(int), cells - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _box_poly(cx, cy, length, width, theta) -> np.ndarray:
    """Corners (4, 2) of a ``length`` x ``width`` box along ``theta``, in obb_to_poly's order."""
    c, s = math.cos(theta), math.sin(theta)
    local = np.array([[-length / 2, -width / 2], [length / 2, -width / 2], [length / 2, width / 2],
                      [-length / 2, width / 2]])
    return np.stack([cx + local[:, 0] * c - local[:, 1] * s, cy + local[:, 0] * s + local[:, 1] * c], axis=1)


# --------------------------------------------------------------------------- ground


def _ground(rng, h: int, w: int, n_fields: int | None = None):
    """Fields with crop rows, low-frequency shading; returns (image float (h, w, 3), surface
    map int8 (h, w): 0 land, 1 water, 2 paved)."""
    if n_fields is None:
        n_fields = int(rng.integers(6, 14)) * max(1, (h * w) // 600_000)
    seeds = rng.uniform(0.0, 1.0, size=(n_fields, 2)) * [w, h]
    warp_x = _smooth(rng, h, w, 4) * 25.0
    warp_y = _smooth(rng, h, w, 4) * 25.0
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    wx, wy = xs + warp_x.astype(np.float32), ys + warp_y.astype(np.float32)
    best = np.full((h, w), np.inf, dtype=np.float32)
    field = np.zeros((h, w), dtype=np.int16)
    for k, (sx, sy) in enumerate(seeds):
        d = (wx - np.float32(sx)) ** 2 + (wy - np.float32(sy)) ** 2
        closer = d < best
        best = np.where(closer, d, best)
        field[closer] = k
    colours = _FIELD_COLOURS[rng.integers(len(_FIELD_COLOURS), size=n_fields)] + rng.uniform(-12, 12, (n_fields, 3))
    img = colours[field]
    angles = rng.uniform(0.0, math.pi, n_fields)
    periods = rng.uniform(4.0, 12.0, n_fields)
    amps = rng.uniform(0.0, 14.0, n_fields) * (rng.random(n_fields) < 0.7)
    a = angles[field]
    wave = np.sin(2 * math.pi * (xs * np.cos(a) + ys * np.sin(a)) / periods[field])
    img += (wave * amps[field])[..., None]
    img += (_smooth(rng, h, w, 6) * 14.0)[..., None]
    return img, np.zeros((h, w), dtype=np.int8)


def _add_water(rng, img, surface) -> tuple[float, float, float] | None:
    """Water beyond a wavy coast line across one side; returns (nx, ny, offset) of the coast
    (water where x nx + y ny > offset) or None when the image gets no water."""
    h, w = surface.shape
    if rng.random() >= 0.6:
        return None
    psi = rng.uniform(0, 2 * math.pi)
    nx, ny = math.cos(psi), math.sin(psi)
    proj_max = max(0 * nx + 0 * ny, w * nx, h * ny, w * nx + h * ny)
    depth = rng.uniform(0.22, 0.4) * (abs(nx) * w + abs(ny) * h)
    offset = proj_max - depth
    ys, xs = np.mgrid[0:h, 0:w]
    along = -xs * ny + ys * nx
    wobble = 12.0 * np.sin(along / rng.uniform(60, 140) + rng.uniform(0, 6.3))
    water = xs * nx + ys * ny > offset + wobble
    colour = np.array([38, 62, 78]) + rng.uniform(-10, 10, 3)
    tex = colour + (_smooth(rng, h, w, 5) * 8.0)[..., None]
    img[water] = tex[water]
    surface[water] = 1
    return nx, ny, offset


def _add_roads(rng, img, surface) -> list[tuple[float, float, float, float]]:
    """1-3 straight roads with a dashed centre line; returns (px, py, angle, half width) each."""
    h, w = surface.shape
    roads = []
    ys, xs = np.mgrid[0:h, 0:w]
    for _ in range(int(rng.integers(1, 4))):
        px, py = rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h
        phi = rng.uniform(0, math.pi)
        half = rng.uniform(9.0, 16.0)
        c, s = math.cos(phi), math.sin(phi)
        across = -(xs - px) * s + (ys - py) * c
        along = (xs - px) * c + (ys - py) * s
        road = (np.abs(across) < half) & (surface != 1)
        grey = rng.uniform(85, 120)
        img[road] = grey + rng.normal(0, 3, size=(int(road.sum()), 1))
        dash = road & (np.abs(across) < 0.8) & (np.sin(along / 5.0) > 0.2)
        img[dash] = 215.0
        surface[road] = 2
        roads.append((px, py, phi, half))
    return roads


def _paint_surface(img, surface, cx, cy, length, width, theta, colour, code: int = 2) -> None:
    """A flat paved rectangle (a lot, an apron, a pad) under a group of objects."""
    f = _Frame(img.shape, cx, cy, theta, math.hypot(length, width) / 2 + 1)
    if f.empty:
        return
    mask = (np.abs(f.u) <= length / 2) & (np.abs(f.v) <= width / 2)
    land = surface[f.y0:f.y1, f.x0:f.x1] != 1
    mask &= land[..., None]
    _paint(img, f, mask, colour)
    surface[f.y0:f.y1, f.x0:f.x1][mask.mean(-1) > 0.5] = code


# --------------------------------------------------------------------------- objects


def _render_object(img, rng, obj: dict, sun: tuple[float, float]) -> None:
    """Paint one object (a dict from the layout) onto ``img``; draws from ``rng`` in a
    fixed order per class."""
    cls, cx, cy, L, W, theta = obj["cls"], obj["cx"], obj["cy"], obj["length"], obj["width"], obj["draw_theta"]
    alpha = obj["alpha"]
    radius = math.hypot(L, W) / 2 + 2
    sdx, sdy = sun
    if cls == _CAR:
        colour = _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))] + rng.uniform(-10, 10, 3)
        sh = _Frame(img.shape, cx, cy, theta, radius, 1.5 * sdx, 1.5 * sdy)
        if not sh.empty:
            _darken(img, sh, (np.abs(sh.u) <= L / 2) & (np.abs(sh.v) <= W / 2), 1 - 0.45 * alpha)
        f = _Frame(img.shape, cx, cy, theta, radius)
        if f.empty:
            return
        body = (np.abs(f.u / (L / 2)) ** 4 + np.abs(f.v / (W / 2)) ** 4) <= 1.0
        _paint(img, f, body, colour, alpha)
        glass = np.array([35.0, 40.0, 48.0])
        inner = np.abs(f.v) <= W / 2 * 0.78
        _paint(img, f, body & inner & (f.u >= L / 2 * 0.12) & (f.u <= L / 2 * 0.5), glass, alpha)
        _paint(img, f, body & inner & (f.u >= -L / 2 * 0.78) & (f.u <= -L / 2 * 0.55), glass, alpha * 0.9)
    elif cls == _TRUCK:
        cab_colour = _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))] + rng.uniform(-10, 10, 3)
        trailer_colour = np.array([rng.uniform(170, 235)] * 3) + rng.uniform(-15, 15, 3)
        cab = rng.uniform(0.18, 0.26) * L
        sh = _Frame(img.shape, cx, cy, theta, radius, 2.5 * sdx, 2.5 * sdy)
        if not sh.empty:
            _darken(img, sh, (np.abs(sh.u) <= L / 2) & (np.abs(sh.v) <= W / 2), 1 - 0.5 * alpha)
        f = _Frame(img.shape, cx, cy, theta, radius)
        if f.empty:
            return
        across = np.abs(f.v) <= W / 2
        trailer = across & (f.u >= -L / 2) & (f.u <= L / 2 - cab - 1.2)
        _paint(img, f, trailer, trailer_colour, alpha)
        ribs = trailer & (np.sin(f.u * 2 * math.pi / 4.0) > 0.7)
        _paint(img, f, ribs, trailer_colour * 0.8, alpha)
        cab_mask = (np.abs(f.v) <= W / 2 * 0.92) & (f.u >= L / 2 - cab) & (f.u <= L / 2)
        _paint(img, f, cab_mask, cab_colour, alpha)
        _paint(img, f, cab_mask & (f.u >= L / 2 - cab * 0.35), np.array([35.0, 40.0, 48.0]), alpha)
    elif cls == _SHIP:
        colour = _SHIP_COLOURS[rng.integers(len(_SHIP_COLOURS))] + rng.uniform(-8, 8, 3)
        bow = rng.uniform(0.18, 0.3) * L
        containers = rng.random() < 0.4
        block_colours = _CAR_COLOURS[rng.integers(len(_CAR_COLOURS), size=6)]
        wake = obj.get("wake", False)
        f = _Frame(img.shape, cx, cy, theta, radius + (L * 0.6 if wake else 0))
        if f.empty:
            return
        if wake:
            spread = np.clip((-f.u - L / 2) / (L * 0.6), 0, 1)
            trail = (f.u < -L / 2) & (np.abs(f.v) <= W / 2 * (0.4 + 1.2 * spread)) & (spread < 1)
            _paint(img, f, trail, np.array([150.0, 170.0, 178.0]), 0.35 * alpha)
        profile = np.clip((L / 2 - f.u) / bow, 0.0, 1.0)
        hull = (np.abs(f.v) <= W / 2 * profile) & (f.u >= -L / 2)
        _paint(img, f, hull, colour, alpha)
        deck = (np.abs(f.v) <= W / 2 * profile - 1.2) & (f.u >= -L / 2 + 1.2)
        _paint(img, f, deck, colour * 0.85 + 20, alpha)
        bridge = (f.u >= -L / 2 * 0.85) & (f.u <= -L / 2 * 0.5) & (np.abs(f.v) <= W / 2 * 0.7)
        _paint(img, f, bridge, np.array([238.0, 238.0, 235.0]), alpha)
        if containers:
            for k in range(6):
                lo = -L / 2 * 0.45 + k * L * 0.12
                block = (f.u >= lo) & (f.u <= lo + L * 0.1) & (np.abs(f.v) <= W / 2 * 0.72) & (f.u <= L / 2 - bow)
                _paint(img, f, block, block_colours[k], alpha)
    elif cls == _PLANE:
        span = W
        colour = np.array([rng.uniform(200, 240)] * 3) + rng.uniform(-6, 6, 3)
        sweep = rng.uniform(0.25, 0.6)
        wing_pos = rng.uniform(0.0, 0.12) * L

        def silhouette(fr):
            fus_w = 0.06 * L + 1.0
            nose = np.clip((L / 2 - fr.u) / (0.12 * L), 0.0, 1.0)
            fus = (np.abs(fr.v) <= fus_w * np.sqrt(nose)) & (fr.u >= -L / 2)
            av = np.abs(fr.v)
            lead = wing_pos + 0.12 * L - av * sweep
            chord = 0.24 * L * (1 - 0.6 * av / (span / 2))
            wing = (av <= span / 2) & (fr.u <= lead) & (fr.u >= lead - chord)
            tail_lead = -L / 2 + 0.16 * L - av * sweep
            tail = (av <= span * 0.18) & (fr.u <= tail_lead) & (fr.u >= tail_lead - 0.1 * L)
            return fus | wing | tail

        sh = _Frame(img.shape, cx, cy, theta, radius, 4 * sdx, 4 * sdy)
        if not sh.empty:
            _darken(img, sh, silhouette(sh), 1 - 0.45 * alpha)
        f = _Frame(img.shape, cx, cy, theta, radius)
        if f.empty:
            return
        _paint(img, f, silhouette(f), colour, alpha)
        _paint(img, f, (np.abs(f.v) <= 0.03 * L) & (f.u >= -L / 2 * 0.8) & (f.u <= L / 2 * 0.6), colour * 0.9, alpha)
    elif cls == _TANK:
        r = L / 2
        base = rng.uniform(190, 240)
        floating = rng.random() < 0.4
        sh = _Frame(img.shape, cx, cy, 0.0, radius, 0.35 * r * sdx, 0.35 * r * sdy)
        if not sh.empty:
            _darken(img, sh, sh.u ** 2 + sh.v ** 2 <= r * r, 1 - 0.5 * alpha)
        f = _Frame(img.shape, cx, cy, 0.0, radius)
        if f.empty:
            return
        d2 = f.u ** 2 + f.v ** 2
        shade = 1.0 - 0.22 * ((f.u * sdx + f.v * sdy) / max(r, 1.0)).mean(-1)
        colour = (base * shade)[..., None] * np.ones(3)
        _paint(img, f, d2 <= r * r, colour, alpha)
        _paint(img, f, (d2 <= r * r) & (d2 >= (r - 1.5) ** 2), np.array([base * 0.6] * 3), alpha)
        if floating:
            _paint(img, f, d2 <= (0.8 * r) ** 2, colour * 0.85, alpha)
        _paint(img, f, d2 <= 1.2, np.array([90.0, 90.0, 90.0]), alpha)
    elif cls == _COURT:
        surround = _COURT_COLOURS[rng.integers(len(_COURT_COLOURS))] + rng.uniform(-10, 10, 3)
        court = surround * rng.uniform(0.75, 0.95) + rng.uniform(-10, 10, 3)
        f = _Frame(img.shape, cx, cy, theta, radius)
        if f.empty:
            return
        au, av = np.abs(f.u), np.abs(f.v)
        _paint(img, f, (au <= L / 2) & (av <= W / 2), surround, alpha)
        hl, hw = L / 2 * 0.66, W / 2 * 0.61  # doubles court inside the surround
        _paint(img, f, (au <= hl) & (av <= hw), court, alpha)
        white = np.array([235.0, 235.0, 230.0])
        lw = 0.55
        outline = (au <= hl + lw) & (av <= hw + lw) & ((au >= hl - lw) | (av >= hw - lw))
        singles = (au <= hl) & (np.abs(av - hw * 0.75) <= lw)
        service_u = hl * 0.54
        service = (np.abs(au - service_u) <= lw) & (av <= hw * 0.75)
        centre = (au <= service_u) & (av <= lw)
        _paint(img, f, outline | singles | service | centre, white, alpha)
        _paint(img, f, (au <= lw * 1.2) & (av <= hw + 2), np.array([40.0, 40.0, 40.0]), alpha)


# --------------------------------------------------------------------------- layout


_SIZE = {  # (length range, width / length range)
    _CAR: ((12.0, 20.0), (0.45, 0.55)),
    _TRUCK: ((26.0, 50.0), (0.28, 0.38)),
    _SHIP: ((24.0, 60.0), (0.24, 0.34)),
    _PLANE: ((30.0, 60.0), (0.85, 1.15)),
    _COURT: ((36.0, 60.0), (0.48, 0.52)),
    _TANK: ((16.0, 48.0), (1.0, 1.0)),
}


def _object(rng, cls: int, cx: float, cy: float, theta: float, length: float | None = None) -> dict:
    (lo, hi), (rlo, rhi) = _SIZE[cls]
    length = float(rng.uniform(lo, hi)) if length is None else float(length)
    width = length * float(rng.uniform(rlo, rhi))
    faint = rng.random() < 0.05
    return {"cls": cls, "cx": float(cx), "cy": float(cy), "length": length, "width": width,
            "draw_theta": float(theta), "alpha": 0.35 if faint else 1.0,
            "difficult": bool(faint or (cls == _CAR and length < 13.0))}


class _Occupancy:
    """Which pixels are taken (each object's box grown by ``margin``), to keep objects apart."""

    def __init__(self, h: int, w: int, margin: float = 1.5):
        self.h, self.w, self.margin = h, w, margin
        self.taken = np.zeros((h, w), dtype=bool)

    def try_place(self, obj: dict, surface: np.ndarray, allowed: tuple[int, ...]) -> bool:
        L, W = obj["length"], obj["width"]
        theta = 0.0 if obj["cls"] == _TANK else obj["draw_theta"]
        corners = _box_poly(obj["cx"], obj["cy"], L, W, theta)
        if corners.min() < 1.0 or corners[:, 0].max() > self.w - 1.0 or corners[:, 1].max() > self.h - 1.0:
            return False
        x0, x1 = int(corners[:, 0].min() - self.margin), int(corners[:, 0].max() + self.margin) + 1
        y0, y1 = int(corners[:, 1].min() - self.margin), int(corners[:, 1].max() + self.margin) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, self.w), min(y1, self.h)
        ys, xs = np.mgrid[y0:y1, x0:x1]
        dx, dy = xs + 0.5 - obj["cx"], ys + 0.5 - obj["cy"]
        c, s = math.cos(theta), math.sin(theta)
        inside = ((np.abs(dx * c + dy * s) <= L / 2 + self.margin)
                  & (np.abs(-dx * s + dy * c) <= W / 2 + self.margin))
        if (self.taken[y0:y1, x0:x1] & inside).any():
            return False
        ix, iy = min(max(int(obj["cx"]), 0), self.w - 1), min(max(int(obj["cy"]), 0), self.h - 1)
        if int(surface[iy, ix]) not in allowed:
            return False
        self.taken[y0:y1, x0:x1] |= inside
        return True


def _land_point(rng, surface, margin: float, tries: int = 20):
    h, w = surface.shape
    for _ in range(tries):
        x, y = rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)
        if surface[int(y), int(x)] != 1:
            return x, y
    return None


def _layout(rng, img, surface, roads, coast, sun) -> list[dict]:
    """Place groups of objects (painting their lots/aprons/pads first); returns the objects."""
    h, w = surface.shape
    occ = _Occupancy(h, w)
    placed: list[dict] = []

    def add(obj, allowed=(0, 2)):
        if occ.try_place(obj, surface, allowed):
            placed.append(obj)

    # traffic along the roads
    for px, py, phi, half in roads:
        c, s = math.cos(phi), math.sin(phi)
        extent = math.hypot(w, h)
        t = -extent / 2 + rng.uniform(0, 30)
        while t < extent / 2:
            lane = rng.choice([-1.0, 1.0])
            cls = _TRUCK if rng.random() < 0.15 else _CAR
            obj = _object(rng, cls, 0, 0, phi + (math.pi if lane < 0 else 0.0))
            obj["cx"] = px + t * c - lane * half * 0.5 * s
            obj["cy"] = py + t * s + lane * half * 0.5 * c
            obj["draw_theta"] += rng.normal(0, 0.03)
            if rng.random() < 0.45:
                add(obj, allowed=(2,))
            t += obj["length"] + rng.uniform(6, 60)

    # harbour: piers with moored ships, and ships at sea
    if coast is not None:
        nx, ny, offset = coast
        along_dir = (-ny, nx)
        for _ in range(int(rng.integers(2, 5))):
            base = _land_point(rng, surface, 40)
            if base is None:
                break
            # a point on the coast: project a random point onto the coast line
            bx, by = base
            d = bx * nx + by * ny - offset
            bx, by = bx - d * nx, by - d * ny
            pier_len = rng.uniform(90, 240)
            pier_w = rng.uniform(6, 10)
            pcx, pcy = bx + nx * pier_len / 2, by + ny * pier_len / 2
            theta = math.atan2(ny, nx)
            _paint_surface(img, np.zeros_like(surface), pcx, pcy, pier_len, pier_w, theta,
                           np.array([150.0, 148.0, 140.0]))
            ship_len = rng.uniform(*_SIZE[_SHIP][0])
            for side in (-1.0, 1.0):
                t = 15.0
                while t < pier_len - 10:
                    obj = _object(rng, _SHIP, 0, 0, theta + (0.0 if rng.random() < 0.5 else math.pi),
                                  length=ship_len * rng.uniform(0.9, 1.1))
                    off = pier_w / 2 + obj["width"] / 2 + rng.uniform(1.5, 4)
                    obj["cx"] = bx + nx * (t + obj["length"] / 2) + side * off * along_dir[0]
                    obj["cy"] = by + ny * (t + obj["length"] / 2) + side * off * along_dir[1]
                    add(obj, allowed=(1,))
                    t += obj["length"] + rng.uniform(3, 20)
        for _ in range(int(rng.integers(10, 30))):
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            if surface[int(y), int(x)] == 1:
                obj = _object(rng, _SHIP, x, y, rng.uniform(-math.pi, math.pi))
                obj["wake"] = rng.random() < 0.6
                add(obj, allowed=(1,))

    n_groups = round(h * w / 110_000 * rng.uniform(0.9, 1.3))
    kinds = ["cars", "trucks", "apron", "tanks", "courts"]
    weights = np.array([0.32, 0.10, 0.14, 0.18, 0.26])
    for _ in range(n_groups):
        kind = kinds[int(rng.choice(len(kinds), p=weights))]
        centre = _land_point(rng, surface, 60)
        if centre is None:
            continue
        gx, gy = centre
        phi = rng.uniform(-math.pi / 2, math.pi / 2)
        c, s = math.cos(phi), math.sin(phi)
        if kind in ("cars", "trucks"):
            cls = _CAR if kind == "cars" else _TRUCK
            length = rng.uniform(*_SIZE[cls][0])
            n_rows, n_slots = int(rng.integers(2, 6)), int(rng.integers(5, 15))
            pitch = length * _SIZE[cls][1][1] * rng.uniform(1.35, 1.7)
            row_gap = length * rng.uniform(1.15, 1.5) + (length * 0.9 if rng.random() < 0.5 else 0)
            lot_l, lot_w = n_slots * pitch + 8, n_rows * row_gap + 6
            _paint_surface(img, surface, gx, gy, lot_l, lot_w, phi, np.array([rng.uniform(80, 125)] * 3))
            for r in range(n_rows):
                for k in range(n_slots):
                    a = (k - (n_slots - 1) / 2) * pitch
                    b = (r - (n_rows - 1) / 2) * row_gap
                    if rng.random() < 0.25:
                        continue
                    slot_cls = _TRUCK if cls == _CAR and rng.random() < 0.05 else cls
                    heading = phi + math.pi / 2 + (math.pi if rng.random() < 0.5 else 0.0) + rng.normal(0, 0.06)
                    obj = _object(rng, slot_cls, gx + a * c - b * s, gy + a * s + b * c, heading,
                                  length=length * rng.uniform(0.92, 1.08) if slot_cls == cls else None)
                    add(obj, allowed=(2,))
        elif kind == "apron":
            n = int(rng.integers(3, 8))
            span = rng.uniform(*_SIZE[_PLANE][0])
            pitch = span * rng.uniform(1.25, 1.6)
            _paint_surface(img, surface, gx, gy, n * pitch + 20, span * 2.2, phi,
                           np.array([rng.uniform(150, 185)] * 3))
            for k in range(n):
                a = (k - (n - 1) / 2) * pitch
                heading = phi + math.pi / 2 + rng.normal(0, 0.1)
                obj = _object(rng, _PLANE, gx + a * c, gy + a * s, heading, length=span * rng.uniform(0.9, 1.1))
                add(obj, allowed=(2,))
        elif kind == "tanks":
            rows, cols = int(rng.integers(2, 5)), int(rng.integers(2, 6))
            diameter = rng.uniform(*_SIZE[_TANK][0])
            pitch = diameter * rng.uniform(1.2, 1.6)
            _paint_surface(img, surface, gx, gy, cols * pitch + 10, rows * pitch + 10, phi,
                           np.array([rng.uniform(140, 175)] * 3) + rng.uniform(-8, 8, 3))
            for r in range(rows):
                for k in range(cols):
                    a, b = (k - (cols - 1) / 2) * pitch, (r - (rows - 1) / 2) * pitch
                    obj = _object(rng, _TANK, gx + a * c - b * s, gy + a * s + b * c, 0.0,
                                  length=diameter * rng.uniform(0.95, 1.05))
                    add(obj, allowed=(2,))
        else:  # courts side by side
            n = int(rng.integers(1, 5))
            length = rng.uniform(*_SIZE[_COURT][0])
            for k in range(n):
                b = (k - (n - 1) / 2) * length * 0.5 * 1.12
                obj = _object(rng, _COURT, gx - b * s, gy + b * c, phi, length=length)
                add(obj, allowed=(0, 2))

    # scattered objects anywhere on land
    for _ in range(int(rng.integers(5, 20))):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        cls = int(rng.choice([_CAR, _CAR, _TRUCK, _PLANE, _TANK, _COURT]))
        obj = _object(rng, cls, x, y, 0.0 if cls == _TANK else rng.uniform(-math.pi, math.pi))
        add(obj)
    return placed


def _image_size(rng, size_range) -> tuple[int, int]:
    (hmin, hmax), (wmin, wmax) = size_range
    h, w = int(rng.integers(hmin, hmax + 1)), int(rng.integers(wmin, wmax + 1))
    if abs(h - w) < 16:  # never square, nor nearly so
        w = w + 16 if w + 16 <= wmax or h - 16 < hmin else w - 16
    return h, w


def render_aerial_scene(rng, h: int, w: int):
    """Render one scene: ``(image uint8 (h, w, 3), polys float32 (N, 8), labels int64 (N,),
    difficult bool (N,))`` with labels indexing :data:`AERIAL_CLASSES`."""
    img, surface = _ground(rng, h, w)
    coast = _add_water(rng, img, surface)
    roads = _add_roads(rng, img, surface)
    sun_angle = rng.uniform(0, 2 * math.pi)
    sun = (math.cos(sun_angle), math.sin(sun_angle))
    objects = _layout(rng, img, surface, roads, coast, sun)
    for obj in objects:
        _render_object(img, rng, obj, sun)
    img += rng.normal(0.0, 3.0, size=img.shape)
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    polys = np.array([_box_poly(o["cx"], o["cy"], o["length"], o["width"],
                                0.0 if o["cls"] == _TANK else o["draw_theta"]).reshape(-1) for o in objects],
                     dtype=np.float32).reshape(-1, 8)
    labels = np.array([o["cls"] for o in objects], dtype=np.int64)
    difficult = np.array([o["difficult"] for o in objects], dtype=bool)
    return image, polys, labels, difficult


# --------------------------------------------------------------------------- writing


def _render_and_write(job) -> int:
    seed, split_index, idx, size_range, image_dir, label_dir = job
    rng = np.random.default_rng([seed, split_index, idx])
    h, w = _image_size(rng, size_range)
    image, polys, labels, difficult = render_aerial_scene(rng, h, w)
    stem = f"P{idx:04d}"
    Image.fromarray(image).save(image_dir / f"{stem}.png", compress_level=1)
    write_dota_labels(label_dir / f"{stem}.txt", np.round(polys.astype(np.float64), 1), labels, AERIAL_CLASSES,
                      difficult.astype(np.int64), header=("imagesource:lsnet-aerial", "gsd:null"))
    return len(labels)


def _clear_generated(folder: Path, pattern: str) -> None:
    if folder.is_dir():
        for p in folder.iterdir():
            if p.is_file() and re.fullmatch(pattern, p.name):
                p.unlink()


def _params(num_train, num_val, seed, size_range) -> dict:
    return {"version": _VERSION, "num_train": num_train, "num_val": num_val, "seed": seed,
            "size_range": [list(r) for r in size_range]}


def make_aerial(root, seed: int = 0, num_train: int = 24, num_val: int = 8, *,
                size_range=((800, 1400), (800, 1400)), workers: int = 0, progress: bool = True) -> dict:
    """Write the synthetic aerial set under ``root`` (see the module docstring for layout,
    classes and conventions). ``size_range`` is ``((min_h, max_h), (min_w, max_w))``;
    ``workers`` processes render (0: one per CPU) and do not change the files. Earlier
    files of this generator are replaced. Returns ``{"root", "seed", "classes",
    "classes_file", "splits": {split: {"root", "num_images", "num_objects"}}}``.
    """
    if min(num_train, num_val) < 0 or num_train + num_val < 1:
        raise ConfigError(f"num_train and num_val must be >= 0 (and not both 0), got {num_train} and {num_val}")
    (hmin, hmax), (wmin, wmax) = size_range
    if min(hmin, wmin) < 128 or hmin > hmax or wmin > wmax:
        raise ConfigError(f"size_range must be ((min_h, max_h), (min_w, max_w)) with sides >= 128, got {size_range}")
    root = output_folder(root)
    root.mkdir(parents=True, exist_ok=True)
    marker = root / "aerial.json"
    if marker.exists():
        marker.unlink()
    summary: dict = {"root": str(root), "seed": seed, "classes": list(AERIAL_CLASSES),
                     "classes_file": str(root / "classes.txt"), "splits": {}}
    write_text_atomic(root / "classes.txt", "".join(c + "\n" for c in AERIAL_CLASSES))
    for split, split_index, n in (("train", 0, num_train), ("val", 1, num_val)):
        image_dir, label_dir = root / split / "images", root / split / "labelTxt"
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        _clear_generated(image_dir, r"P\d{4,}\.png")
        _clear_generated(label_dir, r"P\d{4,}\.txt")
        jobs = [(seed, split_index, idx, size_range, image_dir, label_dir) for idx in range(n)]
        total = 0
        bar = progress_bar(n, f"aerial {split}", enabled=progress)
        with worker_pool(workers, n) as pool:
            for count in (pool.imap(_render_and_write, jobs) if pool else map(_render_and_write, jobs)):
                total += count
                bar.update(1)
        bar.close()
        summary["splits"][split] = {"root": str(root / split), "num_images": n, "num_objects": total}
    write_text_atomic(marker, json.dumps(_params(num_train, num_val, seed, size_range), indent=1) + "\n")
    return summary


def is_generated(root, **params) -> bool:
    """Whether ``root`` holds a complete set of this generator version (made with these
    :func:`make_aerial` parameters ``num_train``, ``num_val``, ``seed``, ``size_range``, when given)."""
    try:
        found = json.loads((Path(root) / "aerial.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(found, dict) or found.get("version") != _VERSION:
        return False
    defaults = {"num_train": 24, "num_val": 8, "seed": 0, "size_range": ((800, 1400), (800, 1400))}
    if not params:
        return True
    merged = defaults | params
    return found == _params(merged["num_train"], merged["num_val"], merged["seed"], merged["size_range"])


# --------------------------------------------------------------------------- crops


def render_aerial_crop(rng, class_index: int, size: int = 64) -> np.ndarray:
    """One ``(size, size, 3)`` uint8 crop: an object of ``AERIAL_CROP_CLASSES[class_index]``
    near the centre, randomly rotated, on ground of the kind it stands on (or any ground);
    the background class has no object."""
    img, surface = _ground(rng, size, size, n_fields=int(rng.integers(1, 4)))
    cls = class_index
    context = rng.random() < 0.7
    if cls == _SHIP or (cls == len(AERIAL_CLASSES) and rng.random() < 0.2):
        img[...] = np.array([38, 62, 78]) + rng.uniform(-10, 10, 3) + (_smooth(rng, size, size, 2) * 8)[..., None]
    elif context and cls in (_CAR, _TRUCK, _PLANE, _TANK):
        grey = rng.uniform(80, 125) if cls in (_CAR, _TRUCK) else rng.uniform(140, 185)
        img[...] = grey + rng.uniform(-6, 6, 3)
    elif cls == len(AERIAL_CLASSES) and rng.random() < 0.4:
        _add_roads(rng, img, surface)
    sun_angle = rng.uniform(0, 2 * math.pi)
    sun = (math.cos(sun_angle), math.sin(sun_angle))
    if cls < len(AERIAL_CLASSES):
        theta = 0.0 if cls == _TANK else rng.uniform(-math.pi, math.pi)
        obj = _object(rng, cls, size / 2 + rng.uniform(-3, 3), size / 2 + rng.uniform(-3, 3), theta)
        scale = rng.uniform(1.0, 1.5)
        diag = math.hypot(obj["length"], obj["width"]) * scale
        scale *= min(1.0, 0.9 * size / diag)
        obj["length"] *= scale
        obj["width"] *= scale
        obj["alpha"] = 1.0
        _render_object(img, rng, obj, sun)
    img += rng.normal(0.0, 3.0, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _render_crop_and_write(job) -> None:
    seed, split_index, class_index, idx, size, folder = job
    rng = np.random.default_rng([seed, split_index, class_index, idx])
    Image.fromarray(render_aerial_crop(rng, class_index, size)).save(folder / f"{idx:07d}.png")


def make_aerial_crops(root, seed: int = 0, per_class_train: int = 400, per_class_val: int = 80, *, size: int = 64,
                      workers: int = 0, progress: bool = True) -> dict:
    """Write single-object crops (and background crops) as an ImageFolder classification set
    ``root/{train,val}/<class>/0000000.png`` for pre-training a backbone with ``lsnet train
    --data root``. Random streams are keyed ``(seed, split + 2, class, index)``, disjoint
    from :func:`make_aerial`'s. Returns ``{"root", "size", "classes", "splits": {split: {class: count}}}``."""
    if size < 32:
        raise ConfigError(f"size must be at least 32 pixels, got {size}")
    if min(per_class_train, per_class_val) < 1:
        raise ConfigError(f"per_class_train and per_class_val must be >= 1, got {per_class_train}, {per_class_val}")
    root = output_folder(root)
    summary: dict = {"root": str(root), "size": size, "classes": list(AERIAL_CROP_CLASSES), "splits": {}}
    for split, split_index, n in (("train", 2, per_class_train), ("val", 3, per_class_val)):
        jobs = []
        for k, name in enumerate(AERIAL_CROP_CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            _clear_generated(folder, r"\d{7}\.png")
            jobs += [(seed, split_index, k, idx, size, folder) for idx in range(n)]
        bar = progress_bar(len(jobs), f"aerial crops {split}", enabled=progress)
        with worker_pool(workers, len(jobs) // 64 + 1) as pool:
            done = pool.imap(_render_crop_and_write, jobs, chunksize=32) if pool else map(_render_crop_and_write, jobs)
            for _ in done:
                bar.update(1)
        bar.close()
        summary["splits"][split] = dict.fromkeys(AERIAL_CROP_CLASSES, n)
    return summary
