"""Procedural renderer of surveillance scenes: persons and vehicles seen from a high camera.

A pinhole camera, mounted 4-12 m up and tilted 30-55 degrees down, looks at a street,
a car park or a building entrance. The ground, the buildings and every object live in
metres in a world frame (x right, y away from the camera, z up; the camera stands over
the origin) and are projected, so perspective is consistent: farther objects sit higher
in the frame and are smaller. Vehicles are stacks of tapered boxes (body, cabin, cab,
cargo box) with windows, lights and wheels; persons are articulated volumes (head, torso,
arms, legs, bags) with a walking gait. Ground-truth boxes come from a label buffer filled
while painting, so they are tight around the pixels an object really shows after
occlusion and clipping by the frame.

Everything is numpy + cv2 and deterministic per seed. Frames are BGR uint8.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

CLASSES = ("person", "vehicle")  # detector class order
VEHICLE_TYPES = ("car", "van", "truck", "bus")
PERSON_TYPES = ("adult", "child")

_MIN_BOX_HEIGHT = 12  # px: smaller objects are drawn but not emitted as ground truth
_MIN_BOX_WIDTH = 3
_MIN_VISIBLE = 0.2  # fraction of an object's own pixels that must show for it to be emitted

_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = 1 << _SHIFT
_FAR = 400.0  # m: the ground is modelled this far out; the haze hides the rest
_DETAIL_RANGE = 130.0  # m: markings, furniture and buildings are laid out this far along the road
_ANCHOR_RANGE = (12.0, 50.0)  # m from the camera to the road / car park / plaza centre
_NEAR = 0.3  # m: camera near plane

_VEHICLE_WEIGHTS = (0.3, 0.22, 0.22, 0.26)  # buses fit the frame less often: drawn a little more
_VEHICLE_CUM = np.cumsum(_VEHICLE_WEIGHTS) / sum(_VEHICLE_WEIGHTS)
_MAX_VEHICLE_PX = (340, 260)  # single renders keep vehicles at most this wide / tall
_MAX_PERSON_PX = 170
_CHILD_RATE = 0.18
# Walkers wait this far outside a lane's edge; drivers only yield to walkers this close to it. Waiting
# walkers thus never hold up the traffic they wait for.
_WAIT_MARGIN = 0.5
_YIELD_MARGIN = 0.1


@dataclass(frozen=True)
class StreetObject:
    kind: str  # "person" | "vehicle"
    subtype: str  # vehicle: one of VEHICLE_TYPES; person: "adult" | "child"
    box: tuple[int, int, int, int]  # tight visible x1, y1, x2, y2 in frame pixels (clipped), exclusive end
    track_id: int  # stable across frames of a sequence; unique within a render
    visibility: float = 1.0  # visible share of the object's own pixels (occlusion and frame clipping)


@dataclass(frozen=True)
class StreetScene:
    image: np.ndarray  # HxWx3 uint8 BGR
    objects: tuple[StreetObject, ...]
    t: float = 0.0  # seconds since the sequence started (0 for single renders)


# =====================================================================================
# camera and light


@dataclass(frozen=True)
class _Camera:
    width: int
    height: int
    f: float
    z: float  # mounting height, m
    rot: np.ndarray  # rows: camera right, down, forward in world coordinates

    @staticmethod
    def make(width: int, height: int, z: float, tilt_deg: float, vfov_deg: float, roll_deg: float) -> _Camera:
        t, r = math.radians(tilt_deg), math.radians(roll_deg)
        right = np.array([1.0, 0.0, 0.0])
        down = np.array([0.0, -math.sin(t), -math.cos(t)])
        fwd = np.array([0.0, math.cos(t), -math.sin(t)])
        rot = np.stack([math.cos(r) * right + math.sin(r) * down, -math.sin(r) * right + math.cos(r) * down, fwd])
        f = height / 2 / math.tan(math.radians(vfov_deg) / 2)
        return _Camera(width, height, f, z, rot)

    @property
    def pos(self) -> np.ndarray:
        return np.array([0.0, 0.0, self.z])

    def to_cam(self, pts: np.ndarray) -> np.ndarray:
        p = np.asarray(pts, np.float64) - np.array([0.0, 0.0, self.z])
        return p @ self.rot.T

    def project(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = self.to_cam(pts)
        z = np.maximum(c[..., 2], 1e-3)
        uv = np.stack([self.width / 2 + self.f * c[..., 0] / z, self.height / 2 + self.f * c[..., 1] / z], -1)
        return uv, c[..., 2]

    def ground(self, u: np.ndarray, v: np.ndarray, far: float = _FAR) -> np.ndarray:
        """Ground points (x, y) seen at pixels (u, v); rays above the horizon stop at `far`."""
        u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
        dc = np.stack([(u - self.width / 2) / self.f, (v - self.height / 2) / self.f, np.ones_like(u)], -1)
        d = dc @ self.rot
        horiz = np.maximum(np.hypot(d[..., 0], d[..., 1]), 1e-9)
        with np.errstate(divide="ignore"):
            t = np.where(d[..., 2] < -1e-9, self.z / np.maximum(-d[..., 2], 1e-12), np.inf)
        dist = np.minimum(t * horiz, far)
        return np.stack([d[..., 0] / horiz * dist, d[..., 1] / horiz * dist], -1)

    def poly(self, pts: np.ndarray) -> np.ndarray | None:
        """A world polygon clipped by the near plane and projected, or None."""
        c = self.to_cam(pts)
        if (c[:, 2] < _NEAR).any():
            c = _clip_near(c)
            if c is None:
                return None
        return np.stack([self.width / 2 + self.f * c[:, 0] / c[:, 2], self.height / 2 + self.f * c[:, 1] / c[:, 2]], -1)

    def horizon(self) -> tuple[np.ndarray, np.ndarray]:
        far = np.array([[-1e5, 1e6, 0.0], [1e5, 1e6, 0.0]])
        uv, _ = self.project(far)
        return uv[0], uv[1]


def _clip_near(c: np.ndarray) -> np.ndarray | None:
    out = []
    n = len(c)
    for i in range(n):
        a, b = c[i], c[(i + 1) % n]
        ina, inb = a[2] >= _NEAR, b[2] >= _NEAR
        if ina:
            out.append(a)
        if ina != inb:
            k = (_NEAR - a[2]) / (b[2] - a[2])
            out.append(a + (b - a) * k)
    return np.array(out) if len(out) >= 3 else None


@dataclass(frozen=True)
class _Light:
    illum: np.ndarray  # BGR gain applied to every reflecting surface
    sun: np.ndarray  # unit vector towards the sun
    ambient: float
    diffuse: float
    shadow: float  # darkening of the ground inside a shadow
    shadow_blur: float  # px
    dusk: bool
    sky_top: np.ndarray
    sky_low: np.ndarray
    haze: np.ndarray

    def shade(self, normal: np.ndarray) -> float:
        return self.ambient * (0.8 + 0.2 * float(normal[2])) + self.diffuse * max(0.0, float(normal @ self.sun))

    def lit(self, albedo, normal=(0.0, 0.0, 1.0)) -> np.ndarray:
        return np.asarray(albedo, np.float32) * self.illum * np.float32(self.shade(np.asarray(normal, np.float64)))

    def shadow_offset(self, z: float) -> np.ndarray:
        """Ground offset of the shadow of a point at height z."""
        return -self.sun[:2] / max(self.sun[2], 0.15) * z


def _make_light(rng: np.random.Generator, lj: float) -> _Light:
    dusk = rng.random() < min(0.5, 0.8 * lj)
    az = rng.uniform(0, 2 * np.pi)
    if dusk:
        elev = math.radians(rng.uniform(4, 12))
        bright = rng.uniform(0.45, 0.65)
        temp = rng.uniform(-1.0, 0.6)  # blue hour to the last orange glow
        ambient, diffuse = 0.85, 0.12
        shadow, blur = 0.12, 6.0
    else:
        elev = math.radians(rng.uniform(25, 65))
        bright = 1.0 + lj * rng.uniform(-0.6, 0.4)
        temp = lj * rng.uniform(-1.2, 1.2)
        overcast = rng.random() < 0.3
        ambient, diffuse = (0.85, 0.15) if overcast else (0.55, 0.55)
        shadow, blur = (0.15, 4.0) if overcast else (rng.uniform(0.35, 0.5), rng.uniform(0.8, 2.0))
    sun = np.array([math.cos(az) * math.cos(elev), math.sin(az) * math.cos(elev), math.sin(elev)])
    illum = np.float32(bright) * np.array([1.0 - 0.18 * temp, 1.0, 1.0 + 0.18 * temp], np.float32)
    if dusk:
        sky_top = np.array([110, 60, 40], np.float32) * (0.7 + 0.3 * bright)
        sky_low = np.array([120 - 40 * temp, 120, 130 + 60 * temp], np.float32) * (0.8 + 0.4 * bright)
    else:
        sky_top = np.array([215, 160, 110], np.float32) * bright
        sky_low = np.array([235, 215, 195], np.float32) * bright
        if ambient > 0.8:  # overcast: grey sky
            sky_top = sky_low = np.array([205, 200, 195], np.float32) * bright
    haze = (sky_low * 0.85).astype(np.float32)
    return _Light(illum, sun, ambient, diffuse, float(shadow), float(blur), bool(dusk), sky_top, sky_low, haze)


# =====================================================================================
# colours

_CAR_COLOURS = (  # BGR albedo, weight
    ((232, 232, 230), 0.22), ((28, 28, 30), 0.15), ((185, 185, 180), 0.16), ((105, 105, 102), 0.14),
    ((150, 80, 25), 0.07), ((40, 35, 170), 0.08), ((80, 40, 20), 0.04), ((55, 85, 40), 0.03),
    ((150, 180, 200), 0.03), ((40, 70, 110), 0.02), ((30, 180, 225), 0.03), ((30, 110, 220), 0.03),
)
_BUS_COLOURS = ((40, 40, 190), (40, 190, 235), (235, 235, 235), (160, 90, 30), (60, 140, 60), (40, 120, 230))
_SKIN = ((150, 185, 230), (120, 155, 205), (95, 130, 180), (70, 100, 150), (45, 70, 110), (160, 190, 225))
_HAIR = ((20, 20, 25), (30, 40, 60), (40, 60, 95), (90, 150, 200), (150, 150, 150), (25, 45, 110))
_BOTTOMS = ((120, 75, 40), (90, 55, 30), (30, 30, 32), (80, 80, 80), (110, 150, 170), (150, 110, 80),
            (60, 60, 70), (170, 170, 175))
_SHOES = ((25, 25, 25), (220, 220, 220), (40, 60, 90), (70, 70, 70))


def _vehicle_type(rng: np.random.Generator) -> str:
    return VEHICLE_TYPES[min(3, int(np.searchsorted(_VEHICLE_CUM, rng.random(), side="right")))]


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _jit(rng: np.random.Generator, colour, amount: float = 12.0) -> tuple[float, float, float]:
    r = rng.random(4)
    k = 0.88 + 0.24 * r[0]
    return tuple(min(250.0, max(5.0, float(c) * k + amount * (2 * float(e) - 1))) for c, e in zip(colour, r[1:]))


def _hsv_colour(rng: np.random.Generator, sat=(0.0, 0.85), val=(0.12, 0.95)) -> tuple[float, float, float]:
    h, s, v = rng.random(3)
    s = sat[0] + (sat[1] - sat[0]) * s
    v = (val[0] + (val[1] - val[0]) * v) * 255.0
    # HSV -> RGB, hue in [0, 1)
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r, g, b = ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))[i]
    return float(b), float(g), float(r)


def _car_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    weights = np.array([w for _, w in _CAR_COLOURS])
    c = _CAR_COLOURS[int(rng.choice(len(_CAR_COLOURS), p=weights / weights.sum()))][0]
    return _jit(rng, c, 8)


# =====================================================================================
# solids: vehicles and street furniture as stacks of tapered boxes


@dataclass(frozen=True)
class _Part:
    lo: tuple[float, float, float]  # x0, y0, z0 in the solid's frame (x forward, y left, z up)
    hi: tuple[float, float, float]
    colour: tuple[float, float, float]
    inset: tuple[float, float, float] = (0.0, 0.0, 0.0)  # top face shrunk at the front, back, sides
    faces: tuple[tuple[str, tuple[float, float, float]], ...] = ()  # per-face colour overrides
    group: int = 0  # parts separated along x are painted back to front by group
    glass: tuple[str, ...] = ()  # faces that are glass (sky reflection)


@dataclass(frozen=True)
class _Decal:
    part: int
    face: str  # front | back | left | right | top
    u0: float  # u along +y on front/back, along +x on the sides and top; v upwards (top: along +y)
    u1: float
    v0: float
    v1: float
    colour: tuple[float, float, float]
    glass: bool = False
    light: str = ""  # "head" | "tail" | "sign": glows at dusk


@dataclass(frozen=True)
class _Ball:
    centre: tuple[float, float, float]
    radius: float
    colour: tuple[float, float, float]


@dataclass(frozen=True)
class _Solid:
    kind: str  # "vehicle" | "prop"
    subtype: str
    length: float
    width: float
    height: float
    parts: tuple[_Part, ...]
    decals: tuple[_Decal, ...] = ()
    wheels: tuple[tuple[float, float], ...] = ()  # (x, radius) on both sides
    balls: tuple[_Ball, ...] = ()
    footprint_r: float = 0.0  # > 0: round footprint of that radius (poles, trees)
    cache: dict = field(default_factory=dict, compare=False, hash=False, repr=False)  # see _solid_geometry


_FACES = {  # vertex indices bl, br, tr, tl (see _box_vertices)
    "front": (1, 2, 6, 5),
    "back": (0, 3, 7, 4),
    "right": (0, 1, 5, 4),
    "left": (3, 2, 6, 7),
    "top": (4, 5, 6, 7),
}


def _box_vertices(p: _Part) -> np.ndarray:
    (x0, y0, z0), (x1, y1, z1) = p.lo, p.hi
    fi, bi, si = p.inset
    return np.array([
        (x0, y0, z0), (x1, y0, z0), (x1, y1, z0), (x0, y1, z0),
        (x0 + bi, y0 + si, z1), (x1 - fi, y0 + si, z1), (x1 - fi, y1 - si, z1), (x0 + bi, y1 - si, z1),
    ])


def _make_vehicle(rng: np.random.Generator, subtype: str, right_hand: bool = True) -> _Solid:
    return {"car": _make_car, "van": _make_van, "truck": _make_truck, "bus": _make_bus}[subtype](rng, right_hand)


_GLASS = (62.0, 55.0, 50.0)
_TYRE = (28.0, 28.0, 30.0)
_HEAD = (225.0, 232.0, 235.0)
_TAIL = (35.0, 35.0, 175.0)
_PLATE = (215.0, 220.0, 222.0)
_DARK = (38.0, 38.0, 40.0)


def _lights(part: int, face_front: str = "front", face_back: str = "back", v=(0.55, 0.8), w=0.2, plate=True,
            grille=True) -> list[_Decal]:
    d = [
        _Decal(part, face_front, 0.05, 0.05 + w, v[0], v[1], _HEAD, light="head"),
        _Decal(part, face_front, 0.95 - w, 0.95, v[0], v[1], _HEAD, light="head"),
        _Decal(part, face_back, 0.04, 0.04 + w, v[0], v[1], _TAIL, light="tail"),
        _Decal(part, face_back, 0.96 - w, 0.96, v[0], v[1], _TAIL, light="tail"),
    ]
    if grille:
        d.append(_Decal(part, face_front, 0.1 + w, 0.9 - w, v[0] - 0.12, v[1] - 0.05, _DARK))
    if plate:
        d.append(_Decal(part, face_front, 0.4, 0.6, 0.12, 0.32, _PLATE))
        d.append(_Decal(part, face_back, 0.4, 0.6, 0.2, 0.42, _PLATE))
    return d


def _make_car(rng: np.random.Generator, right_hand: bool) -> _Solid:
    style = _pick(rng, ("sedan", "hatch", "suv", "estate"))
    length = rng.uniform(4.3, 4.9) if style in ("sedan", "estate") else rng.uniform(3.8, 4.6)
    width = rng.uniform(1.70, 1.88)
    height = rng.uniform(1.6, 1.72) if style == "suv" else rng.uniform(1.38, 1.52)
    clear = rng.uniform(0.16, 0.22) + (0.06 if style == "suv" else 0.0)
    belt = clear + (rng.uniform(0.72, 0.82) if style == "suv" else rng.uniform(0.6, 0.7))
    colour = _car_colour(rng)
    hood = rng.uniform(0.95, 1.25) if style != "suv" else rng.uniform(0.85, 1.05)
    rear = {"sedan": rng.uniform(0.75, 1.0), "hatch": rng.uniform(0.15, 0.3), "suv": rng.uniform(0.15, 0.3),
            "estate": rng.uniform(0.1, 0.2)}[style]
    cx0, cx1 = -length / 2 + rear, length / 2 - hood
    rake_f = rng.uniform(0.45, 0.7)
    rake_b = {"sedan": rng.uniform(0.45, 0.65), "hatch": rng.uniform(0.2, 0.4), "suv": rng.uniform(0.05, 0.2),
              "estate": rng.uniform(0.05, 0.15)}[style]
    roof = colour if rng.random() < 0.85 else (30.0, 30.0, 32.0)
    body = _Part((-length / 2, -width / 2, clear), (length / 2, width / 2, belt), colour, (0.18, 0.12, 0.05), group=0)
    cabin = _Part((cx0, -width / 2 + 0.06, belt), (cx1, width / 2 - 0.06, height), roof, (rake_f, rake_b, 0.14),
                  faces=(("front", _GLASS), ("back", _GLASS), ("left", _GLASS), ("right", _GLASS)), group=0,
                  glass=("front", "back", "left", "right"))
    wheel_r = rng.uniform(0.3, 0.34) + (0.03 if style == "suv" else 0.0)
    # Shadow-dark tyres show under the body from every side.
    tyres = [_Part((x - 0.4 * wheel_r, sy * width / 2 - (0.24 if sy > 0 else -0.02), 0.0),
                   (x + 0.4 * wheel_r, sy * width / 2 - (0.02 if sy > 0 else -0.24), clear + 0.05), _TYRE, group=0)
             for x in (length / 2 - 0.85, -length / 2 + 0.8) for sy in (1, -1)]
    parts = (*tyres, body, cabin)
    ib, ic = len(tyres), len(tyres) + 1
    b = rng.uniform(0.46, 0.54)
    pillar = colour if roof == colour else roof
    decals = [
        *_lights(ib, v=(0.58, 0.88), w=rng.uniform(0.16, 0.24)),
        *[_Decal(ic, side, b - 0.025, b + 0.025, 0.05, 0.95, pillar) for side in ("left", "right")],
    ]
    if rng.random() < 0.25:  # sunroof
        decals.append(_Decal(ic, "top", 0.35, 0.65, 0.3, 0.7, _GLASS, glass=True))
    return _Solid("vehicle", "car", length, width, height, parts, tuple(decals),
                  ((length / 2 - 0.85, wheel_r), (-length / 2 + 0.8, wheel_r)))


def _make_van(rng: np.random.Generator, right_hand: bool) -> _Solid:
    length = rng.uniform(4.9, 6.3)
    width = rng.uniform(1.95, 2.08)
    height = rng.uniform(2.2, 2.75)
    colour = _car_colour(rng) if rng.random() < 0.55 else _jit(rng, (235, 235, 235), 6)
    nose = rng.uniform(0.45, 0.8)
    clear = 0.3
    hood_h = rng.uniform(0.95, 1.15)
    main = _Part((-length / 2, -width / 2, clear), (length / 2 - nose, width / 2, height), colour,
                 (rng.uniform(0.3, 0.55), 0.05, 0.06), group=0)
    front = _Part((length / 2 - nose, -width / 2 + 0.03, clear), (length / 2, width / 2 - 0.03, hood_h), colour,
                  (0.12, 0.0, 0.06), group=1)
    wheel_r = rng.uniform(0.33, 0.37)
    axles = (length / 2 - nose - 0.25, -length / 2 + rng.uniform(0.9, 1.2))
    tyres = [_Part((x - 0.4 * wheel_r, sy * width / 2 - (0.25 if sy > 0 else -0.02), 0.0),
                   (x + 0.4 * wheel_r, sy * width / 2 - (0.02 if sy > 0 else -0.25), clear + 0.05), _TYRE, group=0)
             for x in axles for sy in (1, -1)]
    parts = (*tyres, main, front)
    im, inose = len(tyres), len(tyres) + 1
    body_len = length - nose
    ws_v0 = (hood_h + 0.05 - clear) / (height - clear)
    cab_u0 = 1.0 - min(0.32, 1.25 / body_len)
    decals = [
        _Decal(im, "front", 0.05, 0.95, ws_v0, 0.93, _GLASS, glass=True),
        *[_Decal(im, side, cab_u0, 0.985, ws_v0 + 0.04, 0.9, _GLASS, glass=True) for side in ("left", "right")],
        *[_Decal(im, side, cab_u0 - 0.01, cab_u0, 0.05, 0.9, _DARK) for side in ("left", "right")],
        _Decal(im, "back", 0.495, 0.505, 0.04, 0.96, _DARK),
        _Decal(im, "back", 0.03, 0.1, 0.12, 0.45, _TAIL, light="tail"),
        _Decal(im, "back", 0.9, 0.97, 0.12, 0.45, _TAIL, light="tail"),
        _Decal(im, "back", 0.4, 0.6, 0.02, 0.1, _PLATE),
        _Decal(inose, "front", 0.04, 0.26, 0.5, 0.82, _HEAD, light="head"),
        _Decal(inose, "front", 0.74, 0.96, 0.5, 0.82, _HEAD, light="head"),
        _Decal(inose, "front", 0.3, 0.7, 0.42, 0.82, _DARK),
        _Decal(inose, "front", 0.4, 0.6, 0.08, 0.3, _PLATE),
    ]
    if rng.random() < 0.45:  # rear door windows
        decals += [_Decal(im, "back", 0.08, 0.47, 0.6, 0.88, _GLASS, glass=True),
                   _Decal(im, "back", 0.53, 0.92, 0.6, 0.88, _GLASS, glass=True)]
    if rng.random() < 0.35:  # livery stripe or logo
        stripe = _hsv_colour(rng, (0.5, 1.0), (0.3, 0.9))
        v0 = rng.uniform(0.25, 0.55)
        decals += [_Decal(im, side, 0.05, cab_u0 - 0.04, v0, v0 + rng.uniform(0.08, 0.2), stripe)
                   for side in ("left", "right")]
    return _Solid("vehicle", "van", length, width, height, parts, tuple(decals),
                  tuple((x, wheel_r) for x in axles))


def _make_truck(rng: np.random.Generator, right_hand: bool) -> _Solid:
    length = rng.uniform(7.0, 10.5)
    width = rng.uniform(2.35, 2.5)
    cab_len = rng.uniform(1.9, 2.3)
    cab_h = rng.uniform(2.6, 3.0)
    box_h = rng.uniform(3.3, 3.9)
    gap = rng.uniform(0.2, 0.4)
    cab_col = _car_colour(rng) if rng.random() < 0.6 else _hsv_colour(rng, (0.5, 1.0), (0.4, 0.9))
    style = _pick(rng, ("box", "box", "curtain", "flatbed"))
    box_col = _jit(rng, (225, 225, 222), 8) if (style == "box" and rng.random() < 0.6) else \
        _hsv_colour(rng, (0.0, 0.8), (0.3, 0.9))
    wheel_r = rng.uniform(0.47, 0.53)
    x_cab0 = length / 2 - cab_len
    cab = _Part((x_cab0, -width / 2, 0.55), (length / 2, width / 2, cab_h), cab_col, (0.12, 0.0, 0.08), group=1)
    chassis = _Part((-length / 2 + 0.4, -width * 0.42, 0.5), (x_cab0, width * 0.42, 1.15), (35, 35, 38), group=0)
    bed_z = 1.15
    rear_axles = [-length / 2 + 1.3] + ([-length / 2 + 1.3 + 1.35] if length > 8.0 else [])
    axles = [length / 2 - cab_len / 2 - 0.1, *rear_axles]
    tyres = [_Part((x - 0.42 * wheel_r, sy * width / 2 - (0.3 if sy > 0 else -0.02), 0.0),
                   (x + 0.42 * wheel_r, sy * width / 2 - (0.02 if sy > 0 else -0.3), 0.62), _TYRE, group=0)
             for x in axles for sy in (1, -1)]
    parts = [*tyres, chassis]
    ichassis = len(tyres)
    decals = []
    x_box1 = x_cab0 - gap
    if style == "flatbed":
        parts.append(_Part((-length / 2, -width / 2, bed_z), (x_box1, width / 2, bed_z + 0.25), (60, 65, 70),
                           group=0))
        # a load of crates or a covered pallet stack
        x = -length / 2 + 0.2
        while x < x_box1 - 1.2:
            lx = min(rng.uniform(1.0, 2.4), x_box1 - 0.2 - x)
            parts.append(_Part((x, -width / 2 + 0.15, bed_z + 0.25), (x + lx, width / 2 - 0.15,
                                                                       bed_z + 0.25 + rng.uniform(0.6, 1.6)),
                               _jit(rng, _pick(rng, ((60, 110, 160), (170, 170, 165), (40, 90, 50), (90, 90, 95)))),
                               group=0))
            x += lx + rng.uniform(0.1, 0.4)
        box_top = bed_z + 0.25
    else:
        parts.append(_Part((-length / 2, -width / 2, bed_z), (x_box1, width / 2, box_h), box_col, (0.0, 0.0, 0.02),
                           group=0))
        ibox = len(parts) - 1
        box_top = box_h
        decals += [_Decal(ibox, "back", 0.495, 0.505, 0.03, 0.97, _DARK),
                   _Decal(ibox, "back", 0.02, 0.98, 0.0, 0.04, _DARK)]
        if style == "curtain":
            n_straps = int((x_box1 + length / 2) / 0.6)
            for k in range(1, n_straps):
                u = k / n_straps
                decals += [_Decal(ibox, side, u - 0.004, u + 0.004, 0.02, 0.98, tuple(0.6 * c for c in box_col))
                           for side in ("left", "right")]
        elif rng.random() < 0.5:
            logo = _hsv_colour(rng, (0.6, 1.0), (0.3, 0.9))
            v0 = rng.uniform(0.15, 0.5)
            decals += [_Decal(ibox, side, 0.08, rng.uniform(0.5, 0.92), v0, v0 + rng.uniform(0.15, 0.35), logo)
                       for side in ("left", "right")]
    parts.append(cab)
    icab = len(parts) - 1
    if rng.random() < 0.5 and style != "flatbed":  # roof deflector
        parts.append(_Part((x_cab0 + 0.1, -width / 2 + 0.1, cab_h), (length / 2 - 0.25, width / 2 - 0.1,
                                                                      min(box_top, cab_h + 0.6)),
                           cab_col, (0.8, 0.0, 0.1), group=1))
    decals += [
        _Decal(icab, "front", 0.04, 0.96, 0.5, 0.92, _GLASS, glass=True),
        _Decal(icab, "front", 0.25, 0.75, 0.12, 0.42, _DARK),
        _Decal(icab, "front", 0.04, 0.2, 0.1, 0.22, _HEAD, light="head"),
        _Decal(icab, "front", 0.8, 0.96, 0.1, 0.22, _HEAD, light="head"),
        *[_Decal(icab, side, 0.35, 0.95, 0.52, 0.9, _GLASS, glass=True) for side in ("left", "right")],
        *[_Decal(icab, side, 0.3, 0.33, 0.05, 0.9, _DARK) for side in ("left", "right")],
        _Decal(ichassis, "back", 0.03, 0.2, 0.3, 0.8, _TAIL, light="tail"),
        _Decal(ichassis, "back", 0.8, 0.97, 0.3, 0.8, _TAIL, light="tail"),
    ]
    return _Solid("vehicle", "truck", length, width, max(box_top, cab_h), tuple(parts), tuple(decals),
                  tuple((x, wheel_r) for x in axles))


def _make_bus(rng: np.random.Generator, right_hand: bool) -> _Solid:
    length = rng.uniform(10.5, 13.0)
    width = rng.uniform(2.5, 2.55)
    height = rng.uniform(2.95, 3.3)
    colour = _jit(rng, _pick(rng, _BUS_COLOURS), 10)
    clear = 0.3
    body = _Part((-length / 2, -width / 2, clear), (length / 2, width / 2, height), colour, (0.15, 0.12, 0.1))
    wheel_r = rng.uniform(0.48, 0.52)
    axles = (length / 2 - rng.uniform(2.4, 2.8), -length / 2 + rng.uniform(2.9, 3.5))
    tyres = [_Part((x - 0.42 * wheel_r, sy * width / 2 - (0.3 if sy > 0 else -0.02), 0.0),
                   (x + 0.42 * wheel_r, sy * width / 2 - (0.02 if sy > 0 else -0.3), clear + 0.05), _TYRE)
             for x in axles for sy in (1, -1)]
    ib = len(tyres)
    hv = height - clear

    def vz(z: float) -> float:
        return (z - clear) / hv

    w0, w1 = vz(rng.uniform(1.05, 1.3)), vz(height - rng.uniform(0.3, 0.45))
    pitch = rng.uniform(1.1, 1.5) / length
    door_side = "right" if right_hand else "left"
    decals = [
        _Decal(ib, "front", 0.04, 0.96, vz(0.95), vz(height - 0.35), _GLASS, glass=True),
        _Decal(ib, "front", 0.15, 0.85, vz(height - 0.3), vz(height - 0.08), (25, 25, 25)),
        _Decal(ib, "front", 0.2, 0.8, vz(height - 0.26), vz(height - 0.12), (40, 160, 230), light="sign"),
        _Decal(ib, "front", 0.04, 0.16, vz(0.45), vz(0.65), _HEAD, light="head"),
        _Decal(ib, "front", 0.84, 0.96, vz(0.45), vz(0.65), _HEAD, light="head"),
        _Decal(ib, "front", 0.38, 0.62, vz(0.32), vz(0.5), _PLATE),
        _Decal(ib, "back", 0.03, 0.12, vz(0.5), vz(1.3), _TAIL, light="tail"),
        _Decal(ib, "back", 0.88, 0.97, vz(0.5), vz(1.3), _TAIL, light="tail"),
        _Decal(ib, "back", 0.38, 0.62, vz(0.45), vz(0.65), _PLATE),
    ]
    if rng.random() < 0.6:
        decals.append(_Decal(ib, "back", 0.08, 0.92, w0 + 0.1, w1, _GLASS, glass=True))
    if rng.random() < 0.6:  # livery skirt
        skirt = _jit(rng, _pick(rng, _BUS_COLOURS), 10)
        decals += [_Decal(ib, side, 0.0, 1.0, 0.0, w0 - 0.06, skirt) for side in ("left", "right")]
        decals += [_Decal(ib, face, 0.0, 1.0, 0.0, vz(0.9), skirt) for face in ("front", "back")]
    for side in ("left", "right"):
        decals.append(_Decal(ib, side, 0.03, 0.97, w0, w1, _GLASS, glass=True))
        u = 0.03 + pitch
        while u < 0.97 - pitch / 3:
            decals.append(_Decal(ib, side, u - 0.005, u + 0.005, w0, w1, colour))
            u += pitch
    # doors: front and middle, on the kerb side
    u_front = 1.0 - 1.4 / length
    u_mid = 0.45 + rng.uniform(-0.05, 0.05)
    for uc in (u_front, u_mid):
        decals.append(_Decal(ib, door_side, uc - 0.55 / length, uc + 0.55 / length, vz(0.4), w1, (55, 50, 45),
                             glass=True))
        decals.append(_Decal(ib, door_side, uc - 0.004, uc + 0.004, vz(0.4), w1, _DARK))
    return _Solid("vehicle", "bus", length, width, height, (*tyres, body), tuple(decals),
                  tuple((x, wheel_r) for x in axles))


# ------------------------------------------------------------------ street furniture


def _make_prop(rng: np.random.Generator, kind: str) -> _Solid:
    if kind == "planter":
        ln, wd, h = rng.uniform(1.2, 3.0), rng.uniform(0.8, 1.3), rng.uniform(0.45, 0.8)
        conc = _jit(rng, _pick(rng, ((160, 165, 168), (90, 110, 140), (70, 72, 75))), 8)
        green = _jit(rng, (40, 105, 60), 15)
        balls = []
        for k in range(max(1, int(ln / 0.7))):
            x = -ln / 2 + (k + 0.5) * ln / max(1, int(ln / 0.7))
            r = rng.uniform(0.35, 0.55) * min(1.0, wd / 1.0)
            balls.append(_Ball((x, rng.uniform(-0.1, 0.1), h + r * 0.45), r, _jit(rng, green, 10)))
        return _Solid("prop", kind, ln, wd, h + 0.8, (_Part((-ln / 2, -wd / 2, 0), (ln / 2, wd / 2, h), conc),),
                      balls=tuple(balls))
    if kind == "bollard":
        c = _pick(rng, ((40, 40, 42), (150, 150, 150), (30, 90, 30)))
        return _Solid("prop", kind, 0.2, 0.2, 0.9, (_Part((-0.1, -0.1, 0), (0.1, 0.1, 0.9), c, (0.02, 0.02, 0.02)),),
                      (_Decal(0, "left", 0.0, 1.0, 0.75, 0.85, (200, 200, 200)),
                       _Decal(0, "right", 0.0, 1.0, 0.75, 0.85, (200, 200, 200))), footprint_r=0.15)
    if kind == "lamp":
        h = rng.uniform(5.0, 7.0)
        c = _pick(rng, ((60, 62, 65), (130, 130, 128), (40, 70, 40)))
        arm = rng.uniform(0.8, 1.6)
        return _Solid("prop", kind, 0.2, 0.2, h, (
            _Part((-0.08, -0.08, 0), (0.08, 0.08, h), c),
            _Part((-0.08, -0.1, h - 0.15), (arm, 0.1, h), c),
            _Part((arm - 0.5, -0.16, h - 0.25), (arm + 0.05, 0.16, h - 0.1), (200, 210, 210)),
        ), footprint_r=0.2)
    if kind == "tree":
        h = rng.uniform(4.0, 7.0)
        r = rng.uniform(1.4, 2.4)
        green = _jit(rng, _pick(rng, ((40, 100, 55), (45, 120, 85), (35, 80, 50))), 12)
        balls = tuple(_Ball((rng.uniform(-0.5, 0.5) * r, rng.uniform(-0.5, 0.5) * r,
                             h - r + rng.uniform(-0.4, 0.4) * r), r * rng.uniform(0.55, 0.8), _jit(rng, green, 12))
                      for _ in range(5))
        return _Solid("prop", kind, 0.3, 0.3, h, (_Part((-0.12, -0.12, 0), (0.12, 0.12, h - r), (45, 60, 75)),),
                      balls=balls, footprint_r=0.3)
    if kind == "bench":
        c = _jit(rng, _pick(rng, ((45, 90, 140), (60, 60, 62), (40, 100, 50))), 8)
        return _Solid("prop", kind, 1.8, 0.6, 0.85, (
            _Part((-0.9, -0.3, 0.0), (-0.8, 0.3, 0.45), (50, 50, 50)),
            _Part((0.8, -0.3, 0.0), (0.9, 0.3, 0.45), (50, 50, 50)),
            _Part((-0.9, -0.3, 0.42), (0.9, 0.25, 0.48), c),
            _Part((-0.9, 0.22, 0.48), (0.9, 0.3, 0.85), c),
        ))
    if kind == "bin":
        c = _pick(rng, ((40, 90, 40), (50, 50, 52), (30, 60, 140)))
        return _Solid("prop", kind, 0.5, 0.5, 1.0, (_Part((-0.25, -0.25, 0), (0.25, 0.25, 1.0), c,
                                                          (0.03, 0.03, 0.03)),), footprint_r=0.3)
    raise ValueError(kind)


# =====================================================================================
# persons


@dataclass(frozen=True)
class _PersonLook:
    subtype: str
    height: float
    build: float
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    top: tuple[float, float, float]
    bottom: tuple[float, float, float]
    shoes: tuple[float, float, float]
    short_sleeves: bool
    skirt: bool
    long_hair: bool
    bag: str  # "" | "backpack" | "handbag" | "shoulder"
    bag_colour: tuple[float, float, float]


def _make_person_look(rng: np.random.Generator, child: bool | None = None) -> _PersonLook:
    if child is None:
        child = rng.random() < _CHILD_RATE
    height = float(rng.uniform(0.95, 1.4) if child else np.clip(rng.normal(1.72, 0.08), 1.52, 1.96))
    top = _hsv_colour(rng, (0.0, 0.85), (0.1, 0.95)) if rng.random() < 0.7 else _jit(rng, _pick(rng, _BOTTOMS), 15)
    bottom = _jit(rng, _pick(rng, _BOTTOMS), 12) if rng.random() < 0.8 else _hsv_colour(rng, (0.2, 0.8), (0.2, 0.8))
    bag = ""
    r = rng.random()
    if child:
        bag = "backpack" if r < 0.3 else ""
    elif r < 0.4:
        bag = _pick(rng, ("backpack", "backpack", "handbag", "shoulder"))
    return _PersonLook(
        subtype="child" if child else "adult",
        height=height,
        build=float(rng.uniform(0.9, 1.15)),
        skin=_jit(rng, _pick(rng, _SKIN), 6),
        hair=_jit(rng, _pick(rng, _HAIR), 6),
        top=top,
        bottom=bottom,
        shoes=_jit(rng, _pick(rng, _SHOES), 6),
        short_sleeves=bool(rng.random() < 0.3),
        skirt=bool(rng.random() < 0.12),
        long_hair=bool(rng.random() < 0.3),
        bag=bag,
        bag_colour=_hsv_colour(rng, (0.0, 0.8), (0.1, 0.7)),
    )


# =====================================================================================
# layout of the ground and the backdrop


@dataclass(frozen=True)
class _Band:
    t0: float
    t1: float
    kind: str  # road | walk | park | grass | kerb
    colour: tuple[float, float, float]
    tex: float  # texture amplitude
    tiles: float = 0.0  # paving tile size, 0: none


@dataclass(frozen=True)
class _Lane:
    t: float
    direction: int  # +1: along +s
    width: float


@dataclass(frozen=True)
class _Building:
    s0: float
    s1: float
    height: float
    depth: float
    colour: tuple[float, float, float]
    floor_h: float
    win_w: float
    win_h: float
    pitch: float
    glass: tuple[float, float, float]
    shop: bool
    door: float | None  # s of the entrance door


@dataclass
class _Layout:
    kind: str  # street | carpark | entrance
    d: np.ndarray  # unit ground vector along the road
    n: np.ndarray  # unit ground vector across, pointing away from the camera
    bands: list[_Band]
    marks: list[tuple[float, float, float, float, tuple[float, float, float]]]  # s0, s1, t0, t1, colour
    lanes: list[_Lane]
    walk_lines: list[float]  # t of walking lines along the road
    crossings: list[tuple[float, float, float]]  # s, t0, t1 of walking lines across
    bays: list[tuple[float, float, float, float]]  # s0, s1, t0, t1 of parking rows
    t_back: float  # backdrop line (facade or fence); objects stay in front of it
    backdrop: str  # facade | fence | open
    buildings: list[_Building]
    fence_colour: tuple[float, float, float]
    s_vis: tuple[float, float]
    t_vis: tuple[float, float]
    props: list[tuple[_Solid, tuple[float, float, float]]] = field(default_factory=list)  # solid, (x, y, yaw)
    blocked: list[tuple[float, float, float]] = field(default_factory=list)  # x, y, r
    right_hand: bool = True
    crosswalk: tuple[float, float] | None = None
    door: tuple[float, float] | None = None  # s, t of the entrance door
    s_full: tuple[float, float] = (0.0, 0.0)  # s range of all visible ground

    def world(self, s, t) -> np.ndarray:
        s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
        return s[..., None] * self.d + t[..., None] * self.n

    def st(self, xy) -> tuple[np.ndarray, np.ndarray]:
        xy = np.asarray(xy, np.float64)
        return xy @ self.d, xy @ self.n

    def band_at(self, t: float) -> _Band | None:
        for b in self.bands:
            if b.t0 <= t < b.t1:
                return b
        return None

    def yaw(self, direction: float) -> float:
        return math.atan2(direction * self.d[1], direction * self.d[0])


_ASPHALT = ((80, 80, 82), (95, 93, 90), (70, 72, 76), (105, 105, 108))
_PAVING = ((160, 165, 170), (140, 150, 160), (120, 130, 150), (175, 175, 172), (85, 100, 140))
_GRASS = ((50, 115, 80), (45, 105, 85), (60, 125, 100), (55, 110, 95))
_FACADES = ((70, 90, 150), (60, 75, 120), (165, 170, 175), (150, 175, 200), (120, 125, 130), (190, 200, 205),
            (95, 110, 115), (120, 150, 185))
_WHITE = (225.0, 228.0, 228.0)
_YELLOW = (40.0, 190.0, 225.0)


def _make_camera(rng: np.random.Generator, width: int, height: int) -> tuple[_Camera, np.ndarray]:
    """A camera 4-12 m up looking down 30-55 degrees, and the ground point the scene is built around:
    the road (or car park, or plaza) centre, 12-50 m out and in the upper two thirds of the frame."""
    for _ in range(50):
        z = rng.uniform(4.0, 12.0)
        tilt = rng.uniform(30, 55)
        vfov = rng.uniform(35, 62)
        roll = rng.normal(0, 1.2) if rng.random() < 0.6 else 0.0
        cam = _Camera.make(width, height, z, tilt, vfov, roll)
        rows = np.linspace(0.12, 0.62, 11) * height
        g = cam.ground(np.full(11, width / 2), rows)
        dist = np.hypot(g[:, 0], g[:, 1])
        ok = (dist >= _ANCHOR_RANGE[0]) & (dist <= _ANCHOR_RANGE[1])
        if ok.sum() >= 2:
            v = rng.uniform(rows[ok].min(), rows[ok].max())
            return cam, cam.ground(np.array(width * rng.uniform(0.35, 0.65)), np.array(v))
    return cam, cam.ground(np.array(width / 2), np.array(0.3 * height))


def _make_layout(rng: np.random.Generator, cam: _Camera, anchor: np.ndarray, need_lanes: bool = False) -> _Layout:
    r = rng.random()
    if r < 0.7:
        phi = rng.uniform(-35, 35)
    elif r < 0.9:
        phi = rng.choice([-1, 1]) * rng.uniform(35, 62)
    else:
        phi = rng.choice([-1, 1]) * rng.uniform(62, 80)
    phi = math.radians(phi)
    d = np.array([math.cos(phi), math.sin(phi)])
    n = np.array([-math.sin(phi), math.cos(phi)])
    w, h = cam.width, cam.height
    border = np.concatenate([
        np.stack([np.linspace(0, w, 9), np.zeros(9)], 1), np.stack([np.linspace(0, w, 9), np.full(9, h)], 1),
        np.stack([np.zeros(9), np.linspace(0, h, 9)], 1), np.stack([np.full(9, w), np.linspace(0, h, 9)], 1)])
    g = cam.ground(border[:, 0], border[:, 1])
    s_all, t_all = g @ d, g @ n
    s_full = (float(s_all.min()), float(s_all.max()))
    t_vis = (float(t_all.min()), float(t_all.max()))
    # details (markings, furniture, buildings) only where they can still show: the camera stands at s = 0
    s_vis = (max(s_full[0], -_DETAIL_RANGE), min(s_full[1], _DETAIL_RANGE))
    s_a, t_a = float(anchor @ d), float(anchor @ n)
    kind = _pick(rng, ("street", "street", "carpark", "entrance"))
    right_hand = bool(rng.random() < 0.75)
    lay = _Layout(kind, d, n, [], [], [], [], [], [], 0.0, "facade", [], (0, 0, 0), s_vis, t_vis,
                  right_hand=right_hand, s_full=s_full)
    t_lo = t_vis[0] - 5.0
    asphalt = _jit(rng, _pick(rng, _ASPHALT), 6)
    paving = _jit(rng, _pick(rng, _PAVING), 8)
    kerb = _jit(rng, (170, 172, 170), 6)
    grass = _jit(rng, _pick(rng, _GRASS), 8)
    tile = float(rng.choice([0.0, 0.4, 0.6, 1.0, 1.2]))
    bands = lay.bands

    def road(t0: float, n_lanes: int, lane_w: float, centre_yellow: bool) -> float:
        t1 = t0 + n_lanes * lane_w
        bands.append(_Band(t0, t1, "road", asphalt, 9.0))
        # right-hand traffic drives along +s on the near half (driver's right is towards the camera)
        n_pos = n_lanes // 2 if n_lanes > 1 else 1
        for k in range(n_lanes):
            near_half = k < n_pos if n_lanes > 1 else True
            direction = 1 if near_half == right_hand else -1
            if n_lanes == 1:
                direction = int(rng.choice([-1, 1]))
            lay.lanes.append(_Lane(t0 + (k + 0.5) * lane_w, direction, lane_w))
        s_lo, s_hi = s_vis[0] - 20, s_vis[1] + 20
        for k in range(1, n_lanes):
            tk = t0 + k * lane_w
            if k == n_pos and n_lanes > 1 and centre_yellow:
                for off in (-0.12, 0.12):
                    lay.marks.append((s_lo, s_hi, tk + off - 0.06, tk + off + 0.06, _YELLOW))
            else:
                dash, gap = (3.0, 6.0) if k != n_pos else (4.0, 4.0)
                s = s_lo + rng.uniform(0, dash + gap)
                while s < s_hi:
                    lay.marks.append((s, s + dash, tk - 0.06, tk + 0.06, _WHITE))
                    s += dash + gap
        if rng.random() < 0.6:
            for te in (t0 + 0.3, t1 - 0.3):
                lay.marks.append((s_lo, s_hi, te - 0.06, te + 0.06, _WHITE))
        return t1

    def pavement(t0: float, t1: float, furniture_at: float | None) -> None:
        bands.append(_Band(t0, t1, "walk", paving, 6.0, tile))
        margin = 0.9 if furniture_at is not None else 0.5
        inner = (t0 + margin, t1 - margin) if furniture_at is None else (
            (t0 + 1.1, t1 - 0.5) if furniture_at < (t0 + t1) / 2 else (t0 + 0.5, t1 - 1.1))
        if inner[1] - inner[0] > 0.3:
            for k in range(1 if t1 - t0 < 4 else 2):
                lay.walk_lines.append(inner[0] + (k + 0.5) / (1 if t1 - t0 < 4 else 2) * (inner[1] - inner[0]))
        if furniture_at is not None and rng.random() < 0.75:
            s = s_vis[0] - 10 + rng.uniform(0, 25)
            spacing = rng.uniform(18, 32)
            while s < s_vis[1] + 10:
                lay.props.append((_make_prop(rng, "lamp"), (*lay.world(s, furniture_at), lay.yaw(1) +
                                                            (math.pi / 2 if furniture_at < (t0 + t1) / 2 else
                                                             -math.pi / 2))))
                s += spacing

    if kind == "street":
        n_lanes = int(rng.choice([2, 2, 2, 3, 4]))
        lane_w = rng.uniform(3.0, 3.6)
        t_r0 = t_a - n_lanes * lane_w / 2 + rng.uniform(-1.5, 1.5)
        pw_near, pw_far = rng.uniform(2.5, 5.0), rng.uniform(2.5, 6.0)
        # near side: forecourt, optional verge, pavement, kerb
        t = t_r0 - 0.18 - pw_near
        verge = rng.random() < 0.35
        if verge:
            vw = rng.uniform(1.2, 3.0)
            bands.append(_Band(t - vw, t, "grass", grass, 20.0))
            t_fore = t - vw
        else:
            t_fore = t
        bands.append(_Band(t_lo, t_fore, _pick(rng, ("walk", "walk", "grass")), _jit(rng, paving, 10), 7.0,
                           float(rng.choice([0.0, 0.8, 1.5]))))
        if bands[-1].kind == "grass":
            bands[-1] = _Band(t_lo, t_fore, "grass", grass, 20.0)
        pavement(t, t_r0 - 0.18, t_r0 - 0.18 - 0.5)
        bands.append(_Band(t_r0 - 0.18, t_r0, "kerb", kerb, 4.0))
        t_r1 = road(t_r0, n_lanes, lane_w, bool(rng.random() < 0.35))
        bands.append(_Band(t_r1, t_r1 + 0.18, "kerb", kerb, 4.0))
        t = t_r1 + 0.18
        if rng.random() < 0.3:
            vw = rng.uniform(1.2, 2.5)
            bands.append(_Band(t, t + vw, "grass", grass, 20.0))
            s = s_vis[0] + rng.uniform(0, 8)
            while s < s_vis[1]:
                if rng.random() < 0.7:
                    lay.props.append((_make_prop(rng, "tree"), (*lay.world(s, t + vw / 2), 0.0)))
                s += rng.uniform(8, 14)
            t += vw
            pavement(t, t + pw_far, None)
        else:
            pavement(t, t + pw_far, t + 0.5)
        lay.t_back = t + pw_far
        if rng.random() < 0.5:
            s_cw = s_a + rng.uniform(-8, 8)
            lay.crosswalk = (s_cw - 1.5, s_cw + 1.5)
            k = t_r0 + 0.3
            while k + 0.5 < t_r1 - 0.2:
                lay.marks.append((s_cw - 1.5, s_cw + 1.5, k, k + 0.5, _WHITE))
                k += 1.0
            lay.crossings.append((s_cw, t_r0 - 1.2, t_r1 + 1.2))
    elif kind == "carpark":
        depth = rng.uniform(16, 30)
        t_c0 = t_a - depth / 2 + rng.uniform(-3, 3)
        t_c1 = t_c0 + depth
        pw = rng.uniform(2.5, 4.5)
        bands.append(_Band(t_lo, t_c0 - 0.18 - pw, _pick(rng, ("walk", "grass")), _jit(rng, paving, 10), 7.0, 0.0))
        if bands[-1].kind == "grass":
            bands[-1] = _Band(t_lo, t_c0 - 0.18 - pw, "grass", grass, 20.0)
        pavement(t_c0 - 0.18 - pw, t_c0 - 0.18, t_c0 - 0.68)
        bands.append(_Band(t_c0 - 0.18, t_c0, "kerb", kerb, 4.0))
        bands.append(_Band(t_c0, t_c1, "park", _jit(rng, asphalt, 6), 10.0))
        line_col = _WHITE if rng.random() < 0.7 else _YELLOW
        bay_w, bay_d = rng.uniform(2.4, 2.7), rng.uniform(4.8, 5.2)
        aisle_w = rng.uniform(6.0, 7.0)
        # rows: [bays][aisle][bays] repeated while it fits
        t = t_c0
        s0 = s_vis[0] - 10 + rng.uniform(0, bay_w)
        while t + 2 * bay_d + aisle_w <= t_c1 + 0.5:
            for row in ((t, t + bay_d), (t + bay_d + aisle_w, t + 2 * bay_d + aisle_w)):
                lay.bays.append((s0, s_vis[1] + 10, row[0], row[1]))
                s = s0
                while s < s_vis[1] + 10:
                    lay.marks.append((s - 0.06, s + 0.06, row[0] + 0.2, row[1] - 0.2, line_col))
                    s += bay_w
            ta = t + bay_d
            lay.lanes.append(_Lane(ta + aisle_w * 0.28, 1 if right_hand else -1, aisle_w / 2))
            lay.lanes.append(_Lane(ta + aisle_w * 0.72, -1 if right_hand else 1, aisle_w / 2))
            t += 2 * bay_d + aisle_w
        if not lay.lanes:  # too shallow for bays: a plain aisle
            lay.lanes.append(_Lane((t_c0 + t_c1) / 2 - 1.6, 1, 3.2))
            lay.lanes.append(_Lane((t_c0 + t_c1) / 2 + 1.6, -1, 3.2))
        for k in range(int(rng.integers(2, 5))):
            s = s_a + rng.uniform(-20, 20)
            lay.crossings.append((s, t_c0 - 1.5, t_c1 + 0.5))
        bands.append(_Band(t_c1, t_c1 + 0.18, "kerb", kerb, 4.0))
        gw = rng.uniform(1.5, 4.0)
        bands.append(_Band(t_c1 + 0.18, t_c1 + 0.18 + gw, "grass", grass, 20.0))
        lay.walk_lines.append(t_c1 + 0.18 + gw * 0.5)
        s = s_vis[0] + rng.uniform(0, 10)
        while s < s_vis[1] and gw > 2.2:
            if rng.random() < 0.6:
                lay.props.append((_make_prop(rng, "tree"), (*lay.world(s, t_c1 + 0.18 + gw * 0.5 + 0.6), 0.0)))
            s += rng.uniform(9, 16)
        lay.t_back = t_c1 + 0.18 + gw
    else:  # entrance: a plaza in front of a facade, often crossed by a driveway
        t_f = t_a + rng.uniform(5, 12)
        lay.t_back = t_f
        plaza = _jit(rng, _pick(rng, _PAVING), 8)
        tile2 = float(rng.choice([0.5, 0.8, 1.2]))
        if rng.random() < 0.75 or need_lanes:
            n_lanes = int(rng.choice([1, 2, 2]))
            lane_w = rng.uniform(3.0, 3.5)
            t_r1 = t_f - rng.uniform(6, 12)
            t_r0 = t_r1 - n_lanes * lane_w
            bands.append(_Band(t_lo, t_r0 - 0.18, "walk", plaza, 6.0, tile2))
            bands.append(_Band(t_r0 - 0.18, t_r0, "kerb", kerb, 4.0))
            road(t_r0, n_lanes, lane_w, False)
            bands.append(_Band(t_r1, t_r1 + 0.18, "kerb", kerb, 4.0))
            bands.append(_Band(t_r1 + 0.18, t_f, "walk", plaza, 6.0, tile2))
            lay.walk_lines += [t_r0 - rng.uniform(1.5, 3.0), t_r1 + 0.18 + (t_f - t_r1) * rng.uniform(0.35, 0.6)]
            s_bol = s_vis[0] + rng.uniform(0, 3)
            if rng.random() < 0.5:
                while s_bol < s_vis[1]:
                    lay.props.append((_make_prop(rng, "bollard"), (*lay.world(s_bol, t_r1 + 0.5), 0.0)))
                    s_bol += rng.uniform(1.5, 2.5)
            lay.crossings.append((s_a + rng.uniform(-6, 6), t_r0 - 1.0, t_f - 0.3))
        else:
            bands.append(_Band(t_lo, t_f, "walk", plaza, 6.0, tile2))
            lay.walk_lines += [t_f - rng.uniform(2.0, 4.0), t_f - rng.uniform(6.0, 10.0)]
        s_door = s_a + rng.uniform(-6, 6)
        lay.door = (s_door, t_f)
        # planters along the facade, clear of the door
        s = s_vis[0] + rng.uniform(0, 4)
        while s < s_vis[1]:
            if abs(s - s_door) > 3.5 and rng.random() < 0.6:
                p = _make_prop(rng, "planter")
                lay.props.append((p, (*lay.world(s, t_f - 0.3 - p.width / 2), lay.yaw(1))))
            s += rng.uniform(3.5, 7)
        for _ in range(int(rng.integers(0, 3))):
            p = _make_prop(rng, _pick(rng, ("bench", "bin", "planter")))
            s = s_a + rng.uniform(-15, 15)
            lay.props.append((p, (*lay.world(s, t_f - rng.uniform(3, 6)), lay.yaw(1))))
    # backdrop beyond t_back
    b = rng.random()
    lay.backdrop = "facade" if (kind == "entrance" or b < 0.6) else ("fence" if b < 0.88 else "open")
    t_b = lay.t_back
    if lay.backdrop == "facade":
        s = s_vis[0] - 30 - rng.uniform(0, 10)
        while s < s_vis[1] + 30:
            width = rng.uniform(12, 40)
            lay.buildings.append(_make_building(rng, s, s + width, kind == "entrance"))
            s += width + (rng.uniform(2, 6) if rng.random() < 0.25 else 0.0)
        if lay.door is not None:
            for i, bd in enumerate(lay.buildings):
                if bd.s0 <= lay.door[0] <= bd.s1 and bd.s1 - bd.s0 > 6:
                    s_door = float(np.clip(lay.door[0], bd.s0 + 3, bd.s1 - 3))
                    lay.buildings[i] = _Building(**{**bd.__dict__, "door": s_door})
                    lay.door = (s_door, lay.door[1])
                    lay.crossings.append((s_door, t_vis[0] - 3.0, lay.door[1]))
                    break
            else:
                lay.door = None
    else:
        lay.fence_colour = _jit(rng, _pick(rng, ((60, 110, 60), (70, 70, 72), (150, 150, 150))), 8)
        bands.append(_Band(t_b, t_b + 400, "grass", _jit(rng, grass, 10), 20.0))
    # walkers avoid the street furniture; placement avoids it too
    kept = []
    for solid, pose in lay.props:
        s_p, t_p = lay.st(np.array(pose[:2]))
        r_p = solid.footprint_r or 0.5 * math.hypot(solid.length, solid.width)
        if any(abs(t_p - tl) < r_p + 0.6 for tl in lay.walk_lines):
            continue
        if any(abs(s_p - sc) < r_p + 0.7 and t0 - 1 < t_p < t1 + 1 for sc, t0, t1 in lay.crossings):
            continue
        kept.append((solid, pose))
        lay.blocked.append((pose[0], pose[1], r_p + 0.35))
    lay.props = kept
    return lay


def _make_building(rng: np.random.Generator, s0: float, s1: float, entrance: bool) -> _Building:
    floor_h = rng.uniform(3.0, 3.6)
    floors = int(rng.integers(2, 7))
    return _Building(
        s0=s0, s1=s1, height=floors * floor_h + rng.uniform(0.3, 1.2), depth=rng.uniform(12, 25),
        colour=_jit(rng, _pick(rng, _FACADES), 10), floor_h=floor_h, win_w=rng.uniform(1.0, 2.2),
        win_h=rng.uniform(1.2, 2.0), pitch=rng.uniform(2.4, 4.0),
        glass=_jit(rng, _pick(rng, ((70, 62, 55), (95, 80, 60), (60, 60, 60), (110, 100, 85))), 6),
        shop=bool(rng.random() < (0.8 if entrance else 0.45)), door=None)


# =====================================================================================
# painting helpers


def _px(pts: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(pts) * _ONE).astype(np.int32)


def _clip_segments(seg: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Liang-Barsky: segments (N, 2, 2) clipped to a rectangle; segments outside are dropped."""
    p0, d = seg[:, 0], seg[:, 1] - seg[:, 0]
    lo, hi = np.zeros(len(seg)), np.ones(len(seg))
    ok = np.ones(len(seg), bool)
    for k, (a, b) in enumerate(((x0, x1), (y0, y1))):
        dk, pk = d[:, k], p0[:, k]
        flat = np.abs(dk) < 1e-12
        ok &= ~(flat & ((pk < a) | (pk > b)))
        with np.errstate(divide="ignore", invalid="ignore"):
            ta, tb = (a - pk) / dk, (b - pk) / dk
        t_in, t_out = np.where(flat, -np.inf, np.minimum(ta, tb)), np.where(flat, np.inf, np.maximum(ta, tb))
        lo, hi = np.maximum(lo, t_in), np.minimum(hi, t_out)
    ok &= lo < hi
    return np.stack([p0 + d * lo[:, None], p0 + d * hi[:, None]], 1)[ok]


def _fill(img: np.ndarray, pts: np.ndarray, colour, convex: bool = True) -> None:
    if convex:
        cv2.fillConvexPoly(img, _px(pts), colour, cv2.LINE_AA, _SHIFT)
    else:
        cv2.fillPoly(img, [_px(pts)], colour, cv2.LINE_AA, _SHIFT)


def _col(c) -> tuple[float, float, float]:
    b, g, r = (float(v) for v in c)
    return min(max(b, 0.0), 255.0), min(max(g, 0.0), 255.0), min(max(r, 0.0), 255.0)


class _Patch:
    """A small canvas for one object: premultiplied colour and coverage."""

    def __init__(self, x0: int, y0: int, x1: int, y1: int) -> None:
        self.x0, self.y0 = x0, y0
        self.colour = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
        self.mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        self.off = np.array([x0, y0], np.float64)

    def poly(self, pts: np.ndarray, colour, cover: bool = True) -> None:
        p = _px(pts - self.off)
        cv2.fillConvexPoly(self.colour, p, _col(colour), cv2.LINE_AA, _SHIFT)
        if cover:
            cv2.fillConvexPoly(self.mask, p, 255, cv2.LINE_AA, _SHIFT)

    def limb(self, pts: np.ndarray, width: float, colour) -> None:
        p = _px(pts - self.off)
        t = max(1, int(round(width)))
        c = _col(colour)
        for a, b in zip(p[:-1], p[1:]):
            cv2.line(self.colour, tuple(a), tuple(b), c, t, cv2.LINE_AA, _SHIFT)
            cv2.line(self.mask, tuple(a), tuple(b), 255, t, cv2.LINE_AA, _SHIFT)

    def disc(self, centre: np.ndarray, radius: float, colour) -> None:
        c = tuple(_px(centre - self.off))
        r = max(1, int(round(radius * _ONE)))
        cv2.circle(self.colour, c, r, _col(colour), -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(self.mask, c, r, 255, -1, cv2.LINE_AA, _SHIFT)


def _patch_for(cam: _Camera, uv: np.ndarray, margin: float, spill: float = 0.3) -> _Patch | None:
    """A patch over the projected points, reaching at most `spill` of the frame size beyond the frame
    (objects paint a little beyond it so their visible share can be measured)."""
    x0 = int(math.floor(uv[:, 0].min() - margin))
    y0 = int(math.floor(uv[:, 1].min() - margin))
    x1 = int(math.ceil(uv[:, 0].max() + margin)) + 1
    y1 = int(math.ceil(uv[:, 1].max() + margin)) + 1
    w, h = cam.width, cam.height
    sw, sh = int(w * spill), int(h * spill)
    x0, y0, x1, y1 = max(x0, -sw), max(y0, -sh), min(x1, w + sw), min(y1, h + sh)
    if x1 <= max(x0, 0) or y1 <= max(y0, 0) or x0 >= w or y0 >= h:
        return None
    return _Patch(x0, y0, x1, y1)


def _yaw_rot(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _glass_colour(light: _Light, glass, normal: np.ndarray) -> np.ndarray:
    # Glass mirrors the sky more the more it faces up.
    k = 0.06 + 0.28 * max(0.0, float(normal[2]))
    base = np.asarray(glass, np.float32) * light.illum * np.float32(0.6 + 0.4 * light.ambient)
    return base * (1 - k) + light.sky_low * np.float32(k * 0.8)


_FACE_NAMES = tuple(_FACES)
_FACE_IDX = np.array([_FACES[n] for n in _FACE_NAMES])  # 5, 4
_HUB = (120.0, 120.0, 122.0)
_LIGHT_COLOURS = {"head": np.array([235, 245, 250], np.float32), "tail": np.array([70, 70, 255], np.float32),
                  "sign": np.array([60, 200, 255], np.float32)}


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.stack([a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1], a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2],
                     a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]], -1)


def _solid_geometry(solid: _Solid) -> dict:
    """Pose-independent geometry of a solid in its own frame, computed once and cached on it."""
    g = solid.cache
    if g:
        return g
    verts = np.stack([_box_vertices(p) for p in solid.parts])  # P, 8, 3
    q = verts[:, _FACE_IDX]  # P, 5, 4, 3
    nrm = _cross(q[:, :, 1] - q[:, :, 0], q[:, :, 3] - q[:, :, 0])
    alt = _cross(q[:, :, 2] - q[:, :, 1], q[:, :, 3] - q[:, :, 1])
    small = np.linalg.norm(nrm, axis=-1) < 1e-9
    nrm[small] = alt[small]
    nrm /= np.maximum(np.linalg.norm(nrm, axis=-1, keepdims=True), 1e-12)
    fc = q.mean(axis=2)  # P, 5, 3
    flip = np.einsum("pfk,pfk->pf", nrm, fc - verts.mean(axis=1, keepdims=True)) < 0
    nrm[flip] *= -1
    face_of = {n: i for i, n in enumerate(_FACE_NAMES)}
    if solid.decals:
        qd = q[[dc.part for dc in solid.decals], [face_of[dc.face] for dc in solid.decals]]  # D, 4, 3
        uv = np.array([[(dc.u0, dc.v0), (dc.u1, dc.v0), (dc.u1, dc.v1), (dc.u0, dc.v1)] for dc in solid.decals])
        u, v = uv[..., 0:1], uv[..., 1:2]  # D, 4, 1
        dec = ((1 - u) * (1 - v) * qd[:, None, 0] + u * (1 - v) * qd[:, None, 1] + u * v * qd[:, None, 2]
               + (1 - u) * v * qd[:, None, 3])
    else:
        dec = np.zeros((0, 4, 3))
    ang = np.linspace(0, 2 * np.pi, 18, endpoint=False)
    rings = []
    for side in (1.0, -1.0):
        for wx, wr in solid.wheels:
            rings.append(np.stack([wx + wr * np.cos(ang), np.full_like(ang, side * (solid.width / 2 + 0.015)),
                                   wr + wr * np.sin(ang)], 1))
            rings.append(rings[-1] * 0.0 + np.array([wx, side * (solid.width / 2 + 0.02), wr]) +
                         (rings[-1] - np.array([wx, side * (solid.width / 2 + 0.015), wr])) * 0.55)
    centres_x = verts[:, :, 0].mean(axis=1)
    groups = sorted({p.group for p in solid.parts})
    gx = {gr: float(np.mean([centres_x[i] for i, p in enumerate(solid.parts) if p.group == gr])) for gr in groups}
    g.update(
        verts=verts, nrm=nrm, fc=fc,
        decals=np.array(dec).reshape(-1, 4, 3), decal_part=[dc.part for dc in solid.decals],
        decal_face=[face_of[dc.face] for dc in solid.decals],
        rings=np.array(rings).reshape(-1, 18, 3) if rings else np.zeros((0, 18, 3)),
        balls=np.array([b.centre for b in solid.balls]).reshape(-1, 3),
        group_x=[gx[p.group] for p in solid.parts], tyre=[p.colour == _TYRE for p in solid.parts],
    )
    return g


def _draw_solid(cam: _Camera, light: _Light, solid: _Solid, pose: tuple[float, float, float],
                glows: list | None = None, spill: float = 0.3) -> _Patch | None:
    geo = _solid_geometry(solid)
    x, y, yaw = pose
    rot = _yaw_rot(yaw)
    off = np.array([x, y, 0.0])
    cam_local = rot.T @ (cam.pos - off)
    n_parts = len(solid.parts)
    n_dec = len(geo["decals"])
    side_visible = abs(cam_local[1]) > solid.width / 2 and len(solid.wheels) > 0
    nw = len(solid.wheels)
    rings = geo["rings"]
    if side_visible:
        k0 = 0 if cam_local[1] > 0 else 2 * nw
        rings = rings[k0:k0 + 2 * nw]
    else:
        rings = rings[:0]
    local = np.concatenate([geo["verts"].reshape(-1, 3), geo["decals"].reshape(-1, 3), rings.reshape(-1, 3),
                            geo["balls"]])
    uv, depth = cam.project(local @ rot.T + off)
    if (depth < _NEAR).any():
        return None
    nv = n_parts * 8
    uv_parts = uv[:nv].reshape(n_parts, 8, 2)
    uv_dec = uv[nv:nv + 4 * n_dec].reshape(n_dec, 4, 2)
    nr = len(rings)
    uv_rings = uv[nv + 4 * n_dec:nv + 4 * n_dec + 18 * nr].reshape(nr, 18, 2)
    ball_uv = uv[nv + 4 * n_dec + 18 * nr:]
    ball_z = depth[nv + 4 * n_dec + 18 * nr:]
    ball_r = np.array([b.radius for b in solid.balls]) * cam.f / np.maximum(ball_z, _NEAR) if solid.balls else []
    extra = [uv[:nv]]
    if solid.balls:
        extra += [ball_uv - ball_r[:, None], ball_uv + ball_r[:, None]]
    patch = _patch_for(cam, np.concatenate(extra), 3, spill)
    if patch is None:
        return None
    # visible faces and their shading, all at once
    vis = np.einsum("pfk,pfk->pf", geo["nrm"], cam_local - geo["fc"]) > 1e-6
    nrm_w = geo["nrm"] @ rot.T
    shade = light.ambient * (0.8 + 0.2 * nrm_w[..., 2]) + light.diffuse * np.maximum(0.0, nrm_w @ light.sun)
    decals_on: dict[tuple[int, int], list[int]] = {}
    for k in range(n_dec):
        decals_on.setdefault((geo["decal_part"][k], geo["decal_face"][k]), []).append(k)
    order = sorted(range(n_parts), key=lambda i: (not geo["tyre"][i], -abs(geo["group_x"][i] - cam_local[0]), i))
    illum = light.illum
    for i in order:
        part = solid.parts[i]
        overrides = dict(part.faces) if part.faces else {}
        for f in np.flatnonzero(vis[i]):
            name = _FACE_NAMES[f]
            nrm = nrm_w[i, f]
            if name in part.glass:
                colour = _glass_colour(light, overrides.get(name, _GLASS), nrm)
            else:
                colour = np.asarray(overrides.get(name, part.colour), np.float32) * illum * np.float32(shade[i, f])
            patch.poly(uv_parts[i, _FACE_IDX[f]], colour)
            for k in decals_on.get((i, f), ()):
                dc = solid.decals[k]
                if dc.glass:
                    dcol = _glass_colour(light, dc.colour, nrm)
                elif dc.light and light.dusk:
                    dcol = _LIGHT_COLOURS[dc.light]
                    if glows is not None and dc.light in ("head", "tail"):
                        glows.append((uv_dec[k].mean(axis=0), max(2.0, float(np.ptp(uv_dec[k][:, 0]))), dc.light))
                else:
                    dcol = np.asarray(dc.colour, np.float32) * illum * np.float32(shade[i, f])
                patch.poly(uv_dec[k], dcol, cover=False)
    if nr:
        top = np.float32(light.ambient + light.diffuse * light.sun[2])
        tyre_c = np.asarray(_TYRE, np.float32) * illum * top
        hub_c = np.asarray(_HUB, np.float32) * illum * top
        for k in range(0, nr, 2):
            patch.poly(uv_rings[k], tyre_c)
            patch.poly(uv_rings[k + 1], hub_c, cover=False)
    if solid.balls:
        top = np.float32(light.ambient + light.diffuse * light.sun[2])
        toward = np.array([light.sun[0], light.sun[1], light.sun[2] + 0.5])
        toward = toward / np.linalg.norm(toward)
        for k in np.argsort(-ball_z):
            b = solid.balls[k]
            base = np.asarray(b.colour, np.float32) * illum * top
            patch.disc(ball_uv[k], ball_r[k], base * 0.85)
            c = rot @ np.array(b.centre) + off
            cap, _ = cam.project((c + toward * b.radius * 0.35)[None])
            patch.disc(cap[0], ball_r[k] * 0.6, base * 1.05)
    return patch


def _person_prims(look: _PersonLook, pos: np.ndarray, heading: np.ndarray, phase: float, amp: float):
    """World-space primitives of a person: (kind, points, size_m, colour)."""
    H = look.height
    child = look.subtype == "child"
    w = np.array([heading[0], heading[1], 0.0])
    b = np.array([-heading[1], heading[0], 0.0])
    z = np.array([0.0, 0.0, 1.0])
    base = np.array([pos[0], pos[1], 0.0])
    bw = look.build
    hip_half = (0.09 if child else 0.085) * H * bw
    sh_half = (0.11 if child else 0.118) * H * bw
    depth = 0.058 * H * bw
    z_hip, z_sh = 0.52 * H, (0.8 if child else 0.815) * H
    r_head = (0.085 if child else 0.064) * H
    z_head = H - r_head * 1.05
    swing = 0.17 * H * amp
    prims = []
    for sgn in (1.0, -1.0):
        ph = phase + (0.0 if sgn > 0 else math.pi)
        fwd = swing * math.sin(ph)
        lift = 0.06 * H * amp * max(0.0, math.cos(ph))
        hip = base + b * sgn * hip_half * 0.55 + z * z_hip
        ankle = base + b * sgn * hip_half * 0.45 + w * fwd + z * (0.045 * H + lift)
        knee = (hip + ankle) / 2 + w * (0.02 * H + 0.7 * lift)
        leg_col = look.bottom if not look.skirt else look.skin
        prims.append(("limb", np.stack([hip, knee, ankle]), 0.085 * H * bw, leg_col))
        prims.append(("limb", np.stack([ankle - w * 0.01 * H, ankle + w * 0.06 * H - z * 0.025 * H]), 0.05 * H,
                      look.shoes))
        sh = base + b * sgn * sh_half * 0.9 + z * (z_sh - 0.02 * H)
        hand = base + b * sgn * (sh_half + 0.015 * H) - w * 0.75 * fwd + z * (0.45 * H)
        if look.bag == "handbag" and sgn < 0:
            hand = base + b * sgn * (sh_half + 0.03 * H) + z * (0.46 * H)
        elbow = (sh + hand) / 2 + b * sgn * 0.012 * H - w * 0.015 * H
        fore_col = look.skin if look.short_sleeves else look.top
        prims.append(("limb", np.stack([sh, elbow]), 0.055 * H * bw, look.top))
        prims.append(("limb", np.stack([elbow, hand]), 0.048 * H * bw, fore_col))
        prims.append(("limb", np.stack([hand, hand - z * 0.02 * H]), 0.05 * H, look.skin))
        if look.bag == "handbag" and sgn < 0:
            c = hand - z * 0.07 * H
            prims.append(("hull", _box_pts(c, w, b, z, 0.08 * H, 0.03 * H, 0.06 * H), 0, look.bag_colour))
    torso = []
    for zz, hw, dd in ((z_sh, sh_half, depth), (z_hip - 0.02 * H, hip_half, depth * 0.9)):
        for sb in (-1, 1):
            for sw in (-1, 1):
                torso.append(base + b * sb * hw + w * sw * dd + z * zz)
    prims.append(("hull", np.array(torso), 0, look.top))
    pelvis = []
    for zz in (z_hip + 0.03 * H, z_hip - 0.08 * H):
        for sb in (-1, 1):
            for sw in (-1, 1):
                pelvis.append(base + b * sb * hip_half * 1.02 + w * sw * depth * 0.9 + z * zz)
    prims.append(("hull", np.array(pelvis), 0, look.bottom))
    if look.skirt:
        sk = []
        for zz, hw, dd in ((z_hip + 0.03 * H, hip_half * 1.05, depth), (0.3 * H, hip_half * 1.6, depth * 1.7)):
            for sb in (-1, 1):
                for sw in (-1, 1):
                    sk.append(base + b * sb * hw + w * sw * dd + z * zz)
        prims.append(("hull", np.array(sk), 0, look.bottom))
    if look.bag == "backpack":
        c = base - w * (depth + 0.055 * H) + z * (z_sh - 0.14 * H)
        prims.append(("hull", _box_pts(c, w, b, z, 0.05 * H, 0.085 * H * bw, 0.13 * H), 0, look.bag_colour))
    elif look.bag == "shoulder":
        c = base + b * (hip_half + 0.035 * H) + z * (z_hip + 0.02 * H)
        prims.append(("hull", _box_pts(c, w, b, z, 0.07 * H, 0.025 * H, 0.06 * H), 0, look.bag_colour))
        strap = np.stack([base - b * sh_half * 0.6 + z * z_sh, c + z * 0.05 * H])
        prims.append(("limb", strap, 0.012 * H, look.bag_colour))
    neck = np.stack([base + z * (z_sh - 0.02 * H), base + z * (z_head - 0.5 * r_head)])
    head = base + z * z_head + w * 0.01 * H
    return prims, neck, head, r_head, w


def _box_pts(c, w, b, z, hw, hb, hz) -> np.ndarray:
    return np.array([c + w * sw * hw + b * sb * hb + z * sz * hz for sw in (-1, 1) for sb in (-1, 1) for sz in (-1, 1)])


def _draw_person(cam: _Camera, light: _Light, look: _PersonLook, pos: np.ndarray, heading: np.ndarray,
                 phase: float, amp: float) -> _Patch | None:
    prims, neck, head, r_head, w = _person_prims(look, pos, heading, phase, amp)
    zv = np.array([0.0, 0.0, 1.0])
    side = np.cross(zv, w)
    hair_c = head + zv * 0.22 * r_head - w * 0.3 * r_head
    face_c = head + w * 0.1 * r_head - zv * 0.05 * r_head
    extra = [np.array([[pos[0], pos[1], 0.0]]), neck, head[None], hair_c[None], face_c[None]]
    if look.long_hair:
        extra.append(np.array([head + zv * 0.2 * r_head - w * 0.6 * r_head + s * side * r_head for s in (-1, 1)] +
                              [head - zv * 2.6 * r_head - w * 0.7 * r_head + s * side * r_head * 1.1
                               for s in (-1, 1)]))
    sizes = [len(p[1]) for p in prims]
    pts = np.concatenate([p[1] for p in prims] + extra)
    uv, zz = cam.project(pts)
    if (zz < _NEAR).any():
        return None
    n_prim_pts = sum(sizes)
    foot_z = zz[n_prim_pts]
    scale = cam.f / foot_z
    patch = _patch_for(cam, uv, r_head * scale * 1.3 + 0.06 * look.height * scale + 2)
    if patch is None:
        return None
    tone = light.illum * np.float32(light.ambient * 0.9 + light.diffuse * 0.55)
    side_shade = np.float32(0.82)
    facing = float(w[:2] @ -np.asarray(pos, np.float64)) > 0  # walking towards the camera
    starts = np.cumsum([0] + sizes)
    depth = [float(zz[starts[k]:starts[k + 1]].mean()) for k in range(len(prims))]
    for k in sorted(range(len(prims)), key=lambda i: -depth[i]):
        kind, _, size, colour = prims[k]
        puv = uv[starts[k]:starts[k + 1]]
        col = np.asarray(colour, np.float32) * tone
        if kind == "limb":
            patch.limb(puv, size * scale, col * side_shade)
        else:
            patch.poly(cv2.convexHull(puv.astype(np.float32)).reshape(-1, 2), col)
    skin = np.asarray(look.skin, np.float32) * tone
    hair = np.asarray(look.hair, np.float32) * tone
    o = n_prim_pts + 1
    patch.limb(uv[o:o + 2], 0.05 * look.height * scale, skin * side_shade)
    head_uv, hair_uv, face_uv = uv[o + 2], uv[o + 3], uv[o + 4]
    r_px = r_head * scale
    if look.long_hair:
        patch.poly(cv2.convexHull(uv[o + 5:o + 9].astype(np.float32)).reshape(-1, 2), hair)
    if facing:
        patch.disc(hair_uv, r_px * 1.02, hair)
        patch.disc(face_uv, r_px * 0.93, skin)
    else:
        patch.disc(head_uv, r_px, skin)
        patch.disc(hair_uv, r_px * 1.02, hair)
    return patch



# =====================================================================================
# scene: one camera, one layout, one light; paints frames


class _Thing:
    """One object or prop to paint in a frame."""

    __slots__ = ("ident", "kind", "subtype", "track_id", "footprint", "centre", "draw")

    def __init__(self, ident, kind, subtype, track_id, footprint, centre, draw):
        self.ident = ident
        self.kind = kind
        self.subtype = subtype
        self.track_id = track_id
        self.footprint = footprint  # convex ground polygon (k, 2)
        self.centre = centre  # ground (x, y)
        self.draw = draw  # () -> _Patch | None


def _rect_footprint(solid: _Solid, pose) -> np.ndarray:
    x, y, yaw = pose
    if solid.footprint_r > 0:
        r = solid.footprint_r
        return np.array([[x - r, y - r], [x + r, y - r], [x + r, y + r], [x - r, y + r]])
    c, s = math.cos(yaw), math.sin(yaw)
    hl, hw = solid.length / 2, solid.width / 2
    loc = np.array([[-hl, -hw], [hl, -hw], [hl, hw], [-hl, hw]])
    return loc @ np.array([[c, s], [-s, c]]) + np.array([x, y])


def _person_footprint(pos) -> np.ndarray:
    r = 0.2
    return np.array([[pos[0] - r, pos[1] - r], [pos[0] + r, pos[1] - r], [pos[0] + r, pos[1] + r],
                     [pos[0] - r, pos[1] + r]])


def _segment_hits(p: np.ndarray, poly: np.ndarray) -> bool:
    """Does the ground segment from the camera foot (origin) to p cross the convex polygon?"""
    t_in, t_out = 0.0, 0.98
    k = len(poly)
    cen = poly.mean(axis=0)
    for i in range(k):
        a, b = poly[i], poly[(i + 1) % k]
        e = b - a
        nrm = np.array([e[1], -e[0]])
        if nrm @ (cen - a) > 0:
            nrm = -nrm  # outward
        num = nrm @ (a - 0.0)  # n.(a - origin)
        den = nrm @ p
        if abs(den) < 1e-12:
            if num < 0:
                return False
            continue
        t = num / den
        if den > 0:
            t_out = min(t_out, t)
        else:
            t_in = max(t_in, t)
        if t_in > t_out:
            return False
    return t_in < t_out


def _occludes(a: _Thing, b: _Thing) -> bool:
    """a stands between the camera and some of b."""
    fb = b.footprint
    cen = fb.mean(axis=0)
    samples = [cen] + [cen + (q - cen) * 0.85 for q in fb]
    return any(_segment_hits(p, a.footprint) for p in samples)


def _paint_order(things: list[_Thing], boxes: dict[int, tuple]) -> list[_Thing]:
    n = len(things)
    dist = [float(np.hypot(*t.centre)) for t in things]
    after = [set() for _ in range(n)]  # after[i]: indices that must be painted before i
    for i in range(n):
        bi = boxes.get(things[i].ident)
        if bi is None:
            continue
        for j in range(i + 1, n):
            bj = boxes.get(things[j].ident)
            if bj is None or bi[2] <= bj[0] or bj[2] <= bi[0] or bi[3] <= bj[1] or bj[3] <= bi[1]:
                continue
            i_front = _occludes(things[i], things[j])
            j_front = _occludes(things[j], things[i])
            if i_front and not j_front:
                after[i].add(j)
            elif j_front and not i_front:
                after[j].add(i)
            elif dist[i] < dist[j]:
                after[i].add(j)
            else:
                after[j].add(i)
    order, done = [], [False] * n
    for _ in range(n):
        ready = [i for i in range(n) if not done[i] and all(done[j] for j in after[i])]
        if not ready:  # a cycle: fall back to distance
            ready = [i for i in range(n) if not done[i]]
        i = max(ready, key=lambda k: dist[k])
        done[i] = True
        order.append(things[i])
    return order


class _Buffers:
    """Full-frame work arrays, reused: fresh multi-megabyte temporaries cost more in page faults than the
    arithmetic on them."""

    def __init__(self, width: int, height: int) -> None:
        h, w = height, width
        self.bg = np.empty((h, w, 3), np.uint8)
        self.canvas = np.empty((h, w, 3), np.uint8)
        self.tmp = np.empty((h, w, 3), np.float32)
        self.u8 = np.empty((h, w, 3), np.uint8)
        self.f1 = np.empty((h, w), np.float32)
        self.m1 = np.empty((h, w), np.uint8)
        self.m2 = np.empty((h, w), np.uint8)
        self.m3 = np.empty((h, w), np.uint8)
        self.label = np.empty((h, w), np.int16)


class _Scene:
    def __init__(self, rng: np.random.Generator, width: int, height: int, lj: float, noise_sigma: float,
                 noise_bank: np.ndarray, tex_bank: np.ndarray, bufs: _Buffers, need_lanes: bool = False) -> None:
        self.rng = rng
        self.bufs = bufs
        self.width, self.height = width, height
        self.cam, anchor = _make_camera(rng, width, height)
        self.light = _make_light(rng, lj)
        self.layout = _make_layout(rng, self.cam, anchor, need_lanes)
        self.noise_sigma = noise_sigma
        self.noise_bank = noise_bank
        self.tex_bank = tex_bank
        cam = self.cam
        # camera stage constants for this scene
        self.contrast = 1.0 + lj * rng.uniform(-0.5, 0.5) - (0.15 if self.light.dusk else 0.0)
        self.exposure = 1.0 + lj * rng.uniform(-0.3, 0.3)
        self.blur = float(rng.uniform(0.45, 0.9))
        self.jpeg = int(rng.integers(55, 90)) if rng.random() < 0.35 else 0
        self.noise = noise_sigma * float(rng.uniform(0.7, 1.2)) * (1.5 if self.light.dusk else 1.0)
        self.auto_exposure: float | None = None
        self.background = self._paint_background()  # lives in bufs.bg
        # props are static: pre-render their patches once
        self.props = []
        for solid, pose in self.layout.props:
            if not self._near_frame(pose, solid.height):
                continue
            patch = _draw_solid(cam, self.light, solid, pose, spill=0.0)
            if patch is not None:
                self.props.append((solid, pose, patch))

    # ----------------------------------------------------------------- background

    def _paint_background(self) -> np.ndarray:
        rng, cam, light, lay = self.rng, self.cam, self.light, self.layout
        w, h = self.width, self.height
        img = self.bufs.bg
        tex = self.bufs.m1
        tex.fill(0)
        # sky gradient, horizon at the centre column
        h0, h1 = cam.horizon()
        v_h = (h0[1] + h1[1]) / 2
        rows = np.arange(h, dtype=np.float32)
        k = np.clip((v_h - rows) / max(1.0, 0.6 * h), 0, 1)[:, None]
        sky = light.sky_low[None, :] * (1 - k) + light.sky_top[None, :] * k
        cv2.resize(np.clip(sky, 0, 255).astype(np.uint8)[:, None, :], (w, h), dst=img,
                   interpolation=cv2.INTER_NEAREST)
        ground_far = _col(light.lit(lay.bands[-1].colour) * 0.6 + light.haze * 0.4)
        d = h1 - h0
        ext = np.array([h0 - d * 50, h1 + d * 50])
        big = 1e5
        _fill(img, np.array([ext[0], ext[1], ext[1] + [0, big], ext[0] + [0, big]]), ground_far)
        s0, s1 = lay.s_full[0] - 40, lay.s_full[1] + 40
        bands = lay.bands
        quads = [(s0, s1, b.t0, b.t1) for b in bands]
        self._ground_quads(img, quads, [_col(light.lit(b.colour)) for b in bands], tex=tex,
                           tex_values=[float(np.clip(b.tex * 8, 0, 255)) for b in bands])
        # paving joints near the camera (far joints would only alias)
        for band in bands:
            if band.tiles <= 0:
                continue
            segs = []
            ta, tb = max(band.t0, -35.0), min(band.t1, 35.0)
            for t in np.arange(band.t0 + band.tiles, band.t1 - 0.05, band.tiles):
                if abs(t) < 35:
                    segs.append(((-35.0, t), (35.0, t)))
            s_first = math.floor(max(lay.s_vis[0], -35) / band.tiles) * band.tiles
            if tb > ta:
                for s in np.arange(s_first, min(lay.s_vis[1], 35), band.tiles):
                    segs.append(((s, ta), (s, tb)))
            if segs:
                self._ground_segments(img, np.array(segs), _col(light.lit(band.colour) * 0.8))
        if lay.marks:
            wear = {c: _col(light.lit(c) * rng.uniform(0.85, 1.0)) for c in sorted({m[4] for m in lay.marks})}
            self._ground_quads(img, [m[:4] for m in lay.marks], [wear[m[4]] for m in lay.marks])
        # texture: blotches and grain scaled per material
        oy, ox = int(rng.integers(0, self.tex_bank.shape[0] - h)), int(rng.integers(0, self.tex_bank.shape[1] - w))
        amp = cv2.multiply(self.tex_bank[oy:oy + h, ox:ox + w], tex, dst=self.bufs.f1,
                           scale=0.6 / 8.0 * float(light.illum.mean()), dtype=cv2.CV_32F)
        out = img
        cv2.add(out, cv2.cvtColor(amp, cv2.COLOR_GRAY2BGR, dst=self.bufs.tmp), dst=out, dtype=cv2.CV_8U)
        self._paint_backdrop(out)
        # static shadows: buildings and props
        shadow = self.bufs.m2
        shadow.fill(0)
        for solid, pose in lay.props:
            if self._near_frame(pose, solid.height):
                self._solid_shadow(shadow, solid, pose)
        self._building_shadows(shadow)
        _apply_shadow(out, shadow, light.shadow_blur, light.shadow, self.bufs.m3)
        # haze towards the horizon
        dist = np.hypot(*cam.ground(np.full(h, w / 2), rows.astype(np.float64)).T)
        hz = (1.0 - np.exp(-dist / 260.0)).astype(np.float32)
        hz[rows < v_h] = 0.0
        hot = np.flatnonzero(hz > 0.01)
        if len(hot):
            r0, r1 = int(hot[0]), int(hot[-1]) + 1
            n = r1 - r0
            f = hz[r0:r1]
            tmp = self.bufs.u8[:n]
            keep = np.clip(255 * (1 - f), 0, 255).astype(np.uint8)
            cv2.resize(np.repeat(keep[:, None, None], 3, axis=2), (w, n), dst=tmp, interpolation=cv2.INTER_NEAREST)
            cv2.multiply(out[r0:r1], tmp, dst=out[r0:r1], scale=1 / 255.0)
            add = np.clip(f[:, None] * light.haze[None, :], 0, 255).astype(np.uint8)[:, None, :]
            cv2.resize(add, (w, n), dst=tmp, interpolation=cv2.INTER_NEAREST)
            cv2.add(out[r0:r1], tmp, dst=out[r0:r1])
        return out

    def _ground_segments(self, img, segs: np.ndarray, colour) -> None:
        """Thin lines on the ground, segs (N, 2, 2) in (s, t), in one polylines call."""
        lay, cam = self.layout, self.cam
        pw = lay.world(segs[..., 0], segs[..., 1])
        c = cam.to_cam(np.concatenate([pw, np.zeros(pw.shape[:2] + (1,))], -1))  # N, 2, 3
        z0, z1 = c[:, 0, 2], c[:, 1, 2]
        keep = (z0 >= _NEAR) | (z1 >= _NEAR)
        c, z0, z1 = c[keep], z0[keep], z1[keep]
        k = np.clip((_NEAR - z0) / np.where(np.abs(z1 - z0) < 1e-9, 1e-9, z1 - z0), 0, 1)[:, None]
        a = np.where((z0 < _NEAR)[:, None], c[:, 0] + (c[:, 1] - c[:, 0]) * k, c[:, 0])
        k = np.clip((_NEAR - z1) / np.where(np.abs(z0 - z1) < 1e-9, 1e-9, z0 - z1), 0, 1)[:, None]
        b = np.where((z1 < _NEAR)[:, None], c[:, 1] + (c[:, 0] - c[:, 1]) * k, c[:, 1])
        ends = np.stack([a, b], 1)
        uv = np.stack([cam.width / 2 + cam.f * ends[..., 0] / ends[..., 2],
                       cam.height / 2 + cam.f * ends[..., 1] / ends[..., 2]], -1)
        uv = _clip_segments(uv, -2.0, -2.0, cam.width + 2.0, cam.height + 2.0)
        if len(uv):
            cv2.polylines(img, list(_px(uv)), False, colour, 1, cv2.LINE_AA, _SHIFT)

    def _ground_quads(self, img, quads, colours, max_dist: float = 0.0, tex=None, tex_values=None) -> None:
        """Fill ground rectangles (s0, s1, t0, t1), projected all at once."""
        lay, cam = self.layout, self.cam
        q = np.asarray(quads, np.float64)
        ss = np.stack([q[:, 0], q[:, 1], q[:, 1], q[:, 0]], 1)
        tt = np.stack([q[:, 2], q[:, 2], q[:, 3], q[:, 3]], 1)
        pw = lay.world(ss, tt)
        pts = np.concatenate([pw, np.zeros(pw.shape[:2] + (1,))], -1)
        uv, depth = cam.project(pts.reshape(-1, 3))
        uv, depth = uv.reshape(-1, 4, 2), depth.reshape(-1, 4)
        w, h = self.width, self.height
        if max_dist > 0:
            near_enough = np.hypot(*pw.mean(axis=1).T) < max_dist
        # quads of one colour never overlap here, so each colour is one fillPoly call
        groups: dict[tuple, list[np.ndarray]] = {}
        tex_groups: dict[float, list[np.ndarray]] = {}
        for i in range(len(q)):
            if max_dist > 0 and not near_enough[i]:
                continue
            if (depth[i] >= _NEAR).all():
                p = uv[i]
                if p[:, 0].max() < 0 or p[:, 0].min() > w or p[:, 1].max() < 0 or p[:, 1].min() > h:
                    continue
            else:
                p = cam.poly(pts[i])
                if p is None:
                    continue
            groups.setdefault(colours[i], []).append(_px(p))
            if tex is not None:
                tex_groups.setdefault(tex_values[i], []).append(_px(p))
        for c, polys in groups.items():
            cv2.fillPoly(img, polys, c, cv2.LINE_AA, _SHIFT)
        for c, polys in tex_groups.items():
            cv2.fillPoly(tex, polys, c, cv2.LINE_AA, _SHIFT)

    def _paint_backdrop(self, out: np.ndarray) -> None:
        lay, cam, light, rng = self.layout, self.cam, self.light, self.rng
        tb = lay.t_back
        nrm = np.array([-lay.n[0], -lay.n[1], 0.0])  # facades face the camera

        def wpt(s, t, z):
            p = lay.world(s, t)
            return np.array([p[0], p[1], z])

        if lay.backdrop in ("fence", "open"):
            # trees and far buildings behind
            items = []
            for _ in range(int(rng.integers(6, 16))):
                s = rng.uniform(lay.s_vis[0] - 20, lay.s_vis[1] + 20)
                t = tb + rng.uniform(6, 40)
                hh = rng.uniform(5, 12)
                items.append((t, s, hh))
            for t, s, hh in sorted(items, reverse=True):
                c = wpt(s, t, hh * 0.65)
                cuv, cz = cam.project(c[None])
                if cz[0] < _NEAR:
                    continue
                rad = hh * 0.4 * cam.f / cz[0]
                col = light.lit(_jit(rng, (45, 95, 60), 12)) * 0.8 + light.haze * 0.2
                trunk = cam.poly(np.array([wpt(s - 0.15, t, 0), wpt(s + 0.15, t, 0), wpt(s + 0.15, t, hh * 0.6),
                                           wpt(s - 0.15, t, hh * 0.6)]))
                if trunk is not None:
                    _fill(out, trunk, _col(light.lit((40, 55, 70))))
                for _ in range(3):
                    o = rng.uniform(-0.4, 0.4, 2) * rad
                    cv2.circle(out, tuple(_px(cuv[0] + o)), int(rad * rng.uniform(0.6, 0.85) * _ONE), _col(col), -1,
                               cv2.LINE_AA, _SHIFT)
        if lay.backdrop == "fence":
            s0, s1 = lay.s_full[0] - 30, lay.s_full[1] + 30
            fh = rng.uniform(1.6, 2.4)
            fc = light.lit(lay.fence_colour, nrm)
            quad = cam.poly(np.array([wpt(s0, tb, 0), wpt(s1, tb, 0), wpt(s1, tb, fh), wpt(s0, tb, fh)]))
            if quad is not None:
                mask = np.zeros(out.shape[:2], np.uint8)
                _fill(mask, quad, 255)
                rows = np.flatnonzero(mask.any(axis=1))
                if len(rows):
                    y0, y1 = rows[0], rows[-1] + 1
                    yy, xx = np.mgrid[y0:y1, 0:out.shape[1]]
                    mesh = (((xx + yy) % 5 == 0) | ((xx - yy) % 5 == 0)).astype(np.float32)
                    a = cv2.cvtColor((mask[y0:y1].astype(np.float32) / 255.0) * (0.25 + 0.45 * mesh),
                                     cv2.COLOR_GRAY2BGR)
                    roi = out[y0:y1]
                    roi[:] = np.clip(roi * (1 - a) + fc[None, None, :] * a, 0, 255).astype(np.uint8)
            posts = np.arange(math.floor(lay.s_vis[0] / 2.5) * 2.5, lay.s_vis[1] + 2.5, 2.5)
            pw = lay.world(posts, np.full_like(posts, tb))
            ends = np.concatenate([np.column_stack([pw, np.zeros(len(posts))]),
                                   np.column_stack([pw, np.full(len(posts), fh + 0.05)])])
            uvp, zz = cam.project(ends)
            n_p = len(posts)
            for k in range(n_p):
                if zz[k] > 1.0 and zz[n_p + k] > 1.0 and -50 < uvp[k, 0] < self.width + 50:
                    th = max(1, int(round(0.07 * cam.f / zz[k])))
                    cv2.line(out, tuple(_px(uvp[k])), tuple(_px(uvp[n_p + k])), _col(fc * 0.8), th, cv2.LINE_AA,
                             _SHIFT)
            rail_s = np.linspace(s0, s1, 60)
            rw = lay.world(rail_s, np.full_like(rail_s, tb))
            ruv, rz = cam.project(np.column_stack([rw, np.full(60, fh)]))
            ok = rz > 1.0
            if ok.sum() > 1:
                cv2.polylines(out, [_px(ruv[ok])], False, _col(fc * 0.85), 2, cv2.LINE_AA, _SHIFT)
            return
        if lay.backdrop != "facade":
            return
        cam_s = 0.0
        for bd in sorted(lay.buildings, key=lambda b: -abs((b.s0 + b.s1) / 2 - cam_s)):
            self._paint_building(out, bd, wpt, nrm)

    def _paint_building(self, out, bd: _Building, wpt, nrm) -> None:
        lay, cam, light, rng = self.layout, self.cam, self.light, self.rng
        tb = lay.t_back
        wall = light.lit(bd.colour, nrm)
        corners = np.array([wpt(s_, t_, z_) for s_ in (bd.s0, bd.s1) for t_ in (tb, tb + bd.depth)
                            for z_ in (0.0, bd.height)])
        cuv, cz = cam.project(corners)
        if (cz > _NEAR).all() and (cuv[:, 0].max() < 0 or cuv[:, 0].min() > self.width or cuv[:, 1].max() < 0
                                   or cuv[:, 1].min() > self.height):
            return  # wholly out of frame
        # end walls, roof, then the facade
        for s_end, sign in ((bd.s0, -1.0), (bd.s1, 1.0)):
            if sign * (0.0 - s_end) > 0:  # the camera (at s = 0) is beyond this end
                en = np.array([sign * lay.d[0], sign * lay.d[1], 0.0])
                quad = cam.poly(np.array([wpt(s_end, tb, 0), wpt(s_end, tb + bd.depth, 0),
                                          wpt(s_end, tb + bd.depth, bd.height), wpt(s_end, tb, bd.height)]))
                if quad is not None:
                    _fill(out, quad, _col(light.lit(bd.colour, en) * 0.92))
        if cam.z > bd.height:
            roof = cam.poly(np.array([wpt(bd.s0, tb, bd.height), wpt(bd.s1, tb, bd.height),
                                      wpt(bd.s1, tb + bd.depth, bd.height), wpt(bd.s0, tb + bd.depth, bd.height)]))
            if roof is not None:
                _fill(out, roof, _col(light.lit((95, 98, 100))))
        quad = cam.poly(np.array([wpt(bd.s0, tb, 0), wpt(bd.s1, tb, 0), wpt(bd.s1, tb, bd.height),
                                  wpt(bd.s0, tb, bd.height)]))
        if quad is None:
            return
        _fill(out, quad, _col(wall))
        # parapet line
        a, za = cam.project(np.stack([wpt(bd.s0, tb - 0.05, bd.height - 0.25), wpt(bd.s1, tb - 0.05,
                                                                                  bd.height - 0.25)]))
        # windows: gather quads for all floors, project at once
        quads = []
        colours = []
        floors = int((bd.height - 0.3) // bd.floor_h)
        t_w = tb - 0.03
        n_cols = max(1, int((bd.s1 - bd.s0 - 1.0) // bd.pitch))
        margin = (bd.s1 - bd.s0 - n_cols * bd.pitch) / 2
        glass = _glass_colour(light, bd.glass, nrm)
        lit_win = np.array([120, 200, 245], np.float32) * 0.9
        for fl in range(floors):
            z0 = fl * bd.floor_h
            if fl == 0:
                if bd.shop:
                    quads.append((bd.s0 + 0.6, bd.s1 - 0.6, 0.3, bd.floor_h - 0.6))
                    colours.append(glass * 1.1 if not light.dusk or rng.random() < 0.5 else lit_win)
                    # mullions
                    s = bd.s0 + 0.6 + bd.pitch
                    while s < bd.s1 - 0.7:
                        quads.append((s - 0.06, s + 0.06, 0.3, bd.floor_h - 0.6))
                        colours.append(wall * 0.8)
                        s += bd.pitch
                if bd.door is not None:
                    quads.append((bd.door - 1.6, bd.door + 1.6, 0.0, 2.7))
                    colours.append(wall * 0.55)
                    quads.append((bd.door - 1.4, bd.door + 1.4, 0.0, 2.55))
                    colours.append(glass * 0.9)
                    quads.append((bd.door - 0.03, bd.door + 0.03, 0.0, 2.55))
                    colours.append(wall * 0.5)
                    quads.append((bd.door - 2.4, bd.door + 2.4, 2.8, 3.1))
                    colours.append(wall * 0.7)
                if bd.shop or bd.door is not None:
                    continue
            for c in range(n_cols):
                sc = bd.s0 + margin + (c + 0.5) * bd.pitch
                zc = z0 + bd.floor_h * 0.55
                quads.append((sc - bd.win_w / 2, sc + bd.win_w / 2, zc - bd.win_h / 2, zc + bd.win_h / 2))
                if light.dusk and rng.random() < 0.3:
                    colours.append(lit_win)
                else:
                    colours.append(glass)
        if not quads:
            return
        q = np.array(quads)
        s_a, s_b, z_a, z_b = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
        ss = np.stack([s_a, s_b, s_b, s_a], 1)
        zs = np.stack([z_a, z_a, z_b, z_b], 1)
        pw = lay.world(ss, np.full_like(ss, t_w))
        pts = np.concatenate([pw, zs[..., None]], -1)
        uv, depth = cam.project(pts.reshape(-1, 3))
        uv = uv.reshape(-1, 4, 2)
        depth = depth.reshape(-1, 4)
        w, h = self.width, self.height
        ok = (depth >= 1.0).all(axis=1) & (uv[..., 0].max(axis=1) >= 0) & (uv[..., 0].min(axis=1) <= w) & (
            uv[..., 1].max(axis=1) >= 0) & (uv[..., 1].min(axis=1) <= h)
        # consecutive quads of one colour go in one call; order matters (door frame, then glass)
        groups: list[tuple[tuple, list]] = []
        for i in np.flatnonzero(ok):
            c = _col(colours[i])
            if groups and groups[-1][0] == c:
                groups[-1][1].append(_px(uv[i]))
            else:
                groups.append((c, [_px(uv[i])]))
        for c, polys in groups:
            cv2.fillPoly(out, polys, c, cv2.LINE_AA, _SHIFT)
        if (za > 1).all():
            cv2.line(out, tuple(_px(a[0])), tuple(_px(a[1])), _col(wall * 0.8), 1, cv2.LINE_AA, _SHIFT)

    def _building_shadows(self, shadow: np.ndarray) -> None:
        lay, cam, light = self.layout, self.cam, self.light
        if lay.backdrop != "facade" or light.shadow < 0.2:
            return
        # the sun must be behind the facade for it to shade the street
        if float(light.sun[:2] @ lay.n) <= 0.05:
            return
        for bd in lay.buildings:
            off = light.shadow_offset(bd.height)
            base = np.array([lay.world(bd.s0, lay.t_back), lay.world(bd.s1, lay.t_back)])
            pts = np.concatenate([base, base[::-1] + off])
            hull = cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(np.float64)
            poly = cam.poly(np.column_stack([hull, np.zeros(len(hull))]))
            if poly is not None:
                _fill(shadow, poly, 255)

    def _solid_shadow(self, shadow: np.ndarray, solid: _Solid, pose) -> None:
        cam, light = self.cam, self.light
        x, y, yaw = pose
        rot = _yaw_rot(yaw)
        verts = _solid_geometry(solid)["verts"] @ rot.T + np.array([x, y, 0.0])  # P, 8, 3
        step = light.shadow_offset(1.0)
        ground = verts[..., :2] + verts[..., 2:3] * step
        for g in ([ground.reshape(-1, 2)] if solid.kind == "vehicle" else list(ground)):
            hull = cv2.convexHull(g.astype(np.float32)).reshape(-1, 2).astype(np.float64)
            poly = cam.poly(np.column_stack([hull, np.zeros(len(hull))]))
            if poly is not None:
                _fill(shadow, poly, 255)
        for b in solid.balls:
            c = rot @ np.array(b.centre) + np.array([x, y, 0.0])
            g = c[:2] + light.shadow_offset(c[2])
            ang = np.linspace(0, 2 * np.pi, 12, endpoint=False)
            sd = light.sun[:2] / max(np.hypot(*light.sun[:2]), 1e-6)
            stretch = 1.0 / max(light.sun[2], 0.3)
            ring = g + np.outer(np.cos(ang) * b.radius * stretch, sd) + np.outer(np.sin(ang) * b.radius,
                                                                                  [-sd[1], sd[0]])
            poly = cam.poly(np.column_stack([ring, np.zeros(12)]))
            if poly is not None:
                _fill(shadow, poly, 255)

    def _person_shadow(self, shadow: np.ndarray, pos, height: float) -> None:
        light = self.light
        off = light.shadow_offset(height * 0.92)
        ln = float(np.hypot(*off))
        sd = off / ln if ln > 1e-6 else np.array([1.0, 0.0])
        pd = np.array([-sd[1], sd[0]])
        r = 0.22 * height / 1.7
        p = np.asarray(pos, np.float64)
        pts = [p + pd * r * math.cos(a) + sd * (r * 0.6 * math.sin(a)) for a in np.linspace(math.pi / 2,
                                                                                            3 * math.pi / 2, 5)]
        pts += [p + off + pd * r * 0.8 * math.cos(a) + sd * (r * 0.8 * math.sin(a)) for a in np.linspace(
            -math.pi / 2, math.pi / 2, 5)]
        poly = self.cam.poly(np.column_stack([np.array(pts), np.zeros(len(pts))]))
        if poly is not None:
            _fill(shadow, poly, 255)

    def _near_frame(self, pose, height: float) -> bool:
        """Could something standing here (or its shadow) show in the frame?"""
        x, y = pose[0], pose[1]
        uv, z = self.cam.project(np.array([[x, y, 0.0], [x, y, height]]))
        if (z < _NEAR).any():
            return True  # beside or behind the camera: let the projection decide
        w, h = self.width, self.height
        reach = max(w, h) * 0.5 + float(np.hypot(*(uv[1] - uv[0]))) * 2.5
        return bool(uv[:, 0].min() > -reach and uv[:, 0].max() < w + reach and uv[:, 1].min() > -reach
                    and uv[:, 1].max() < h + reach)

    # -------------------------------------------------------------------- frames

    def frame(self, objects: list[dict], t: float = 0.0) -> StreetScene:
        """Paint one frame. objects: dicts with kind, subtype, track_id and either
        (solid, pose) for vehicles or (look, pos, heading, phase, amp) for persons."""
        cam, light = self.cam, self.light
        w, h = self.width, self.height
        canvas = self.bufs.canvas
        np.copyto(canvas, self.background)
        # moving shadows and the dark ground under vehicles
        shadow, contact = self.bufs.m1, self.bufs.m2
        shadow.fill(0)
        contact.fill(0)
        for ob in objects:
            if ob["kind"] == "vehicle":
                self._solid_shadow(shadow, ob["solid"], ob["pose"])
                fp = _rect_footprint(ob["solid"], ob["pose"])
                cen = fp.mean(axis=0)
                poly = cam.poly(np.column_stack([cen + (fp - cen) * 1.04, np.zeros(4)]))
                if poly is not None:
                    _fill(contact, poly, 255)
            else:
                self._person_shadow(shadow, ob["pos"], ob["look"].height)
        _apply_shadow(canvas, shadow, light.shadow_blur, light.shadow, self.bufs.m3)
        _apply_shadow(canvas, contact, 1.5, 0.5, self.bufs.m3)
        label = self.bufs.label
        label.fill(0)
        glows: list = []
        things: list[_Thing] = []
        for k, ob in enumerate(objects):
            ident = k + 1
            if ob["kind"] == "vehicle":
                solid, pose = ob["solid"], ob["pose"]
                things.append(_Thing(ident, "vehicle", solid.subtype, ob["track_id"], _rect_footprint(solid, pose),
                                     np.array(pose[:2]),
                                     (lambda s=solid, p=pose: _draw_solid(cam, light, s, p, glows))))
            else:
                pos = np.asarray(ob["pos"], np.float64)
                things.append(_Thing(ident, "person", ob["look"].subtype, ob["track_id"], _person_footprint(pos), pos,
                                     (lambda o=ob: _draw_person(cam, light, o["look"], np.asarray(o["pos"]),
                                                                np.asarray(o["heading"]), o["phase"], o["amp"]))))
        patches: dict[int, _Patch] = {}
        for thing in things:
            patches[thing.ident] = thing.draw()
        for solid, pose, patch in self.props:
            ident = -(len(patches) + 1)
            things.append(_Thing(ident, "prop", solid.subtype, 0, _rect_footprint(solid, pose), np.array(pose[:2]),
                                 None))
            patches[ident] = patch
        boxes = {i: (p.x0, p.y0, p.x0 + p.mask.shape[1], p.y0 + p.mask.shape[0])
                 for i, p in patches.items() if p is not None}
        full: dict[int, int] = {}
        for thing in _paint_order([t_ for t_ in things if patches.get(t_.ident) is not None], boxes):
            patch = patches[thing.ident]
            lab = max(0, thing.ident)
            _composite(canvas, label, patch, lab, w, h)
            if lab:
                full[lab] = int(np.count_nonzero(patch.mask > 127))
        if glows:
            self._glow(canvas, glows)
        image = self._camera(canvas)
        out = []
        for thing in things:
            if thing.ident <= 0 or thing.ident not in full or full[thing.ident] == 0:
                continue
            p = patches[thing.ident]
            x0, y0 = max(p.x0, 0), max(p.y0, 0)
            x1, y1 = min(p.x0 + p.mask.shape[1], w), min(p.y0 + p.mask.shape[0], h)
            if x1 <= x0 or y1 <= y0:
                continue
            vis = label[y0:y1, x0:x1] == thing.ident
            count = int(np.count_nonzero(vis))
            if count == 0:
                continue
            rows = np.flatnonzero(vis.any(axis=1))
            cols = np.flatnonzero(vis.any(axis=0))
            box = (x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1)
            visibility = count / full[thing.ident]
            if box[3] - box[1] < _MIN_BOX_HEIGHT or box[2] - box[0] < _MIN_BOX_WIDTH or visibility < _MIN_VISIBLE:
                continue
            out.append(StreetObject(thing.kind, thing.subtype, box, thing.track_id, round(min(1.0, visibility), 3)))
        out.sort(key=lambda o: o.track_id)
        return StreetScene(image=image, objects=tuple(out), t=t)

    def _glow(self, canvas: np.ndarray, glows) -> None:
        h, w = canvas.shape[:2]
        em = np.zeros((h, w, 3), np.uint8)
        for c, size, kind in glows:
            col = (200, 220, 230) if kind == "head" else (40, 40, 200)
            r = max(1.0, size * 0.9)
            cv2.circle(em, tuple(_px(c)), int(r * _ONE), col, -1, cv2.LINE_AA, _SHIFT)
        if em.any():
            cv2.addWeighted(canvas, 1.0, cv2.GaussianBlur(em, (0, 0), 2.5), 0.6, 0.0, dst=canvas)

    def _camera(self, img: np.ndarray) -> np.ndarray:
        rng = self.rng
        h, w = self.height, self.width
        mean = float(img[::8, ::8].mean())
        if self.auto_exposure is None:  # settles on the first frame, then stays (no flicker in sequences)
            self.auto_exposure = float(np.clip((115.0 / max(mean, 1.0)) ** 0.6, 0.85, 1.7))
        gain = self.exposure * self.auto_exposure
        # exposure, then contrast about the exposed mean
        tmp = self.bufs.u8
        cv2.addWeighted(img, gain * self.contrast, img, 0.0, mean * gain * (1.0 - self.contrast), dst=tmp)
        out = np.empty((h, w, 3), np.uint8)
        if self.noise > 0:
            cv2.GaussianBlur(tmp, (0, 0), self.blur, dst=img)
            bank = self.noise_bank
            oy, ox = int(rng.integers(0, bank.shape[0] - h)), int(rng.integers(0, bank.shape[1] - w))
            cv2.addWeighted(img, 1.0, bank[oy:oy + h, ox:ox + w], self.noise * float(rng.uniform(0.9, 1.1)), 0.0,
                            dst=out, dtype=cv2.CV_8U)
        else:
            cv2.GaussianBlur(tmp, (0, 0), self.blur, dst=out)
        if self.jpeg:
            ok, enc = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg])
            if ok:
                out = cv2.imdecode(enc, cv2.IMREAD_COLOR)
        return out

    # ------------------------------------------------------------------ queries

    def solid_px_box(self, solid: _Solid, pose) -> tuple[float, float, float, float] | None:
        x, y, yaw = pose
        fp = _rect_footprint(solid, pose)
        pts = np.concatenate([np.column_stack([fp, np.zeros(4)]), np.column_stack([fp, np.full(4, solid.height)])])
        uv, z = self.cam.project(pts)
        if (z < _NEAR).any():
            return None
        return float(uv[:, 0].min()), float(uv[:, 1].min()), float(uv[:, 0].max()), float(uv[:, 1].max())

    def person_px_box(self, xy, height: float) -> tuple[float, float, float, float] | None:
        uv, z = self.cam.project(np.array([[xy[0], xy[1], 0.0], [xy[0], xy[1], height]]))
        if (z < _NEAR).any():
            return None
        half = 0.25 * self.cam.f / z[0]
        return (float(min(uv[:, 0]) - half), float(uv[1, 1]), float(max(uv[:, 0]) + half), float(uv[0, 1]))

    def walkable(self, xy, road_ok: float) -> bool:
        lay = self.layout
        s, t = lay.st(np.asarray(xy))
        if t > lay.t_back - 0.4:
            return False
        band = lay.band_at(float(t))
        if band is None:
            return False
        if any(math.hypot(xy[0] - bx, xy[1] - by) < br for bx, by, br in lay.blocked):
            return False
        if band.kind == "road":
            if lay.crosswalk and lay.crosswalk[0] < s < lay.crosswalk[1]:
                return True
            return self.rng.random() < road_ok
        if band.kind == "grass":
            return self.rng.random() < 0.35
        return True


def _composite(canvas: np.ndarray, label: np.ndarray, patch: _Patch, ident: int, w: int, h: int) -> None:
    ph, pw = patch.mask.shape
    x0, y0 = max(patch.x0, 0), max(patch.y0, 0)
    x1, y1 = min(patch.x0 + pw, w), min(patch.y0 + ph, h)
    if x1 <= x0 or y1 <= y0:
        return
    sl = (slice(y0 - patch.y0, y1 - patch.y0), slice(x0 - patch.x0, x1 - patch.x0))
    m = patch.mask[sl]
    keep = cv2.cvtColor(255 - m, cv2.COLOR_GRAY2BGR)
    roi = canvas[y0:y1, x0:x1]
    cv2.multiply(roi, keep, dst=roi, scale=1 / 255.0)
    cv2.add(roi, patch.colour[sl], dst=roi)
    label[y0:y1, x0:x1][m > 127] = ident


def _apply_shadow(out: np.ndarray, mask: np.ndarray, blur: float, strength: float, work: np.ndarray) -> None:
    """Darken out (float BGR) under a binary shadow mask, softened by blur (px)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0 or strength <= 0:
        return
    cols = np.flatnonzero(mask.any(axis=0))
    pad = int(3 * blur) + 2
    h, w = mask.shape
    y0, y1 = max(0, rows[0] - pad), min(h, rows[-1] + pad + 1)
    x0, x1 = max(0, cols[0] - pad), min(w, cols[-1] + pad + 1)
    if blur > 2.5 and min(y1 - y0, x1 - x0) >= 16:  # wide and soft: a quarter-size blur looks the same
        small = cv2.resize(mask[y0:y1, x0:x1], ((x1 - x0) // 4, (y1 - y0) // 4), interpolation=cv2.INTER_AREA)
        sh = cv2.resize(cv2.GaussianBlur(small, (0, 0), blur / 4), (x1 - x0, y1 - y0), dst=work[y0:y1, x0:x1],
                        interpolation=cv2.INTER_LINEAR)
    else:
        sh = cv2.GaussianBlur(mask[y0:y1, x0:x1], (0, 0), blur, dst=work[y0:y1, x0:x1])
    keep = cv2.addWeighted(sh, -strength, sh, 0.0, 255.0, dst=sh)  # 255 - strength * shadow, saturated
    roi = out[y0:y1, x0:x1]
    cv2.multiply(roi, cv2.cvtColor(keep, cv2.COLOR_GRAY2BGR), dst=roi, scale=1 / 255.0)


# =====================================================================================
# public renderer


class StreetRenderer:
    """Surveillance frames of persons and vehicles; the sequence of outputs is fixed by ``seed``.

    light_jitter scales the lighting spread: brightness, contrast, colour temperature and the share of
    dusk scenes (0.8 * light_jitter, at most half; 0 gives plain daylight only). noise_sigma is the sensor
    noise in grey levels (dusk scenes get 1.5 times as much).

    Ground truth: every object showing at least _MIN_VISIBLE of its own pixels, with a visible box at least
    _MIN_BOX_HEIGHT px tall. The box is tight around the pixels the object really shows (after occlusion
    and clipping by the frame); ``visibility`` says what share of the object that is.
    """

    def __init__(self, width: int = 640, height: int = 480, seed: int = 0, light_jitter: float = 0.3,
                 noise_sigma: float = 6.0) -> None:
        if width < 160 or height < 120:
            raise ValueError(f"frame {width}x{height} is too small; use at least 160x120")
        self.width = width
        self.height = height
        self.light_jitter = light_jitter
        self.noise_sigma = noise_sigma
        self._rng = np.random.default_rng(seed)
        rng = self._rng
        self._noise_bank = rng.standard_normal((height + 48, width + 48, 3), dtype=np.float32)
        grain = rng.standard_normal((height + 64, width + 64), dtype=np.float32)
        blotch = cv2.resize(rng.standard_normal(((height + 64) // 8, (width + 64) // 8), dtype=np.float32),
                            (width + 64, height + 64), interpolation=cv2.INTER_CUBIC)
        self._tex_bank = (0.7 * cv2.GaussianBlur(grain, (0, 0), 0.7) + 0.4 * blotch).astype(np.float32)
        self._bufs = _Buffers(width, height)

    # ------------------------------------------------------------------ public

    def render(self) -> StreetScene:
        """An independent frame: new camera, layout and light; 0-6 persons and 0-4 vehicles."""
        scene = self._scene(self._rng)
        rng = scene.rng
        objects = _place_random(scene, rng, int(rng.integers(0, 7)), int(rng.integers(0, 5)))
        return scene.frame(objects)

    def sequence(self, n_frames: int, fps: float = 15.0, persons: int = 3, vehicles: int = 2,
                 loiterers: int = 0) -> Iterator[StreetScene]:
        """n_frames of one scene: `persons` walkers and `vehicles` vehicles at a time (each replaced by a new
        track soon after it leaves), plus `loiterers` who wander within 1-2.5 m of a spot for the whole run.
        The first frame already shows traffic. Frames are made lazily; the sequence is fixed when this is
        called and does not depend on render() calls made while it runs."""
        if n_frames < 0 or fps <= 0 or min(persons, vehicles, loiterers) < 0:
            raise ValueError("need n_frames >= 0, fps > 0 and non-negative object counts")
        # The sequence gets its own generator now, so interleaving with render() cannot change it.
        seq_rng = np.random.default_rng(int(self._rng.integers(0, 2**63 - 1)))
        return self._sequence(seq_rng, n_frames, fps, persons, vehicles, loiterers)

    # --------------------------------------------------------------- internals

    def _scene(self, rng: np.random.Generator, bufs: _Buffers | None = None, need_lanes: bool = False) -> _Scene:
        return _Scene(rng, self.width, self.height, self.light_jitter, self.noise_sigma, self._noise_bank,
                      self._tex_bank, bufs or self._bufs, need_lanes)

    def _sequence(self, rng, n_frames, fps, persons, vehicles, loiterers) -> Iterator[StreetScene]:
        # a sequence keeps its own buffers so render() calls in between cannot disturb it
        bufs = _Buffers(self.width, self.height)
        for _ in range(10):  # a layout where the requested traffic can actually show
            scene = self._scene(rng, bufs, need_lanes=vehicles > 0)
            sim = _Traffic(scene, rng, fps, persons, vehicles, loiterers)
            if (vehicles == 0 or sim.can_drive()) and (persons == 0 or sim.can_walk()):
                break
        for k in range(n_frames):
            if k:
                sim.step()
            yield scene.frame(sim.objects(), t=k / fps)


# =====================================================================================
# random placement for single frames


def _rect_overlap(a: np.ndarray, b: np.ndarray, margin: float = 0.0) -> bool:
    """Separating-axis test for two convex ground polygons, grown by margin."""
    for poly in (a, b):
        k = len(poly)
        for i in range(k):
            e = poly[(i + 1) % k] - poly[i]
            ax = np.array([-e[1], e[0]]) / max(np.hypot(*e), 1e-12)
            pa, pb = a @ ax, b @ ax
            if pa.max() + margin < pb.min() or pb.max() + margin < pa.min():
                return False
    return True


def _inframe_fraction(box, w: int, h: int) -> float:
    x0, y0, x1, y1 = box
    area = max(1e-6, (x1 - x0) * (y1 - y0))
    ix = max(0.0, min(x1, w) - max(x0, 0))
    iy = max(0.0, min(y1, h) - max(y0, 0))
    return ix * iy / area


def _place_random(scene: _Scene, rng: np.random.Generator, n_persons: int, n_vehicles: int) -> list[dict]:
    lay, cam, w, h = scene.layout, scene.cam, scene.width, scene.height
    objects: list[dict] = []
    taken: list[tuple[np.ndarray, np.ndarray, float]] = []  # footprint, centre, bounding radius
    boxes: list[tuple] = []
    props = [(fp, fp.mean(axis=0), float(np.hypot(*(fp - fp.mean(axis=0)).T).max()))
             for fp in (_rect_footprint(ps, pp) for ps, pp in lay.props)]

    def clear(fp: np.ndarray, others, margin: float) -> bool:
        c = fp.mean(axis=0)
        r = float(np.hypot(*(fp - c).T).max())
        for ofp, oc, orad in others:
            if math.hypot(c[0] - oc[0], c[1] - oc[1]) < r + orad + margin and _rect_overlap(fp, ofp, margin):
                return False
        return True

    def entry(fp: np.ndarray):
        c = fp.mean(axis=0)
        return fp, c, float(np.hypot(*(fp - c).T).max())

    track = 1
    for _ in range(n_vehicles):
        subtype = _vehicle_type(rng)
        solid = _make_vehicle(rng, subtype, lay.right_hand)
        big = subtype in ("truck", "bus")
        n_try = 50 if big else 25
        # long vehicles fit more often farther away: bias their candidates up the frame
        v = rng.uniform(0.0, 1.0, n_try) ** (1.6 if big else 1.0)
        cand = cam.ground(rng.uniform(-0.1 * w, 1.1 * w, n_try), h * (0.02 + 1.05 * v))
        max_w = _MAX_VEHICLE_PX[0] * (1.25 if subtype == "bus" else 1.0)
        s_c, t_c = lay.st(cand)
        for s, t in zip(s_c, t_c):
            bays = [b for b in lay.bays if b[2] <= t <= b[3]]
            if bays and subtype in ("car", "van") and rng.random() < 0.7:
                b = bays[0]
                tc = (b[2] + b[3]) / 2
                yaw = lay.yaw(1) + (math.pi / 2 if rng.random() < 0.5 else -math.pi / 2) + rng.normal(0, 0.05)
                pos = lay.world(s, tc)
            else:
                if not lay.lanes:
                    continue
                lane = min(lay.lanes, key=lambda ln: abs(ln.t - t))
                if abs(lane.t - t) > 6:
                    continue
                pos = lay.world(s, lane.t + rng.normal(0, 0.15))
                yaw = lay.yaw(lane.direction) + rng.normal(0, 0.03)
            pose = (float(pos[0]), float(pos[1]), float(yaw))
            fp = _rect_footprint(solid, pose)
            if not clear(fp, taken, 0.6) or not clear(fp, props, 0.3):
                continue
            box = scene.solid_px_box(solid, pose)
            if box is None or not 14 <= box[3] - box[1] <= _MAX_VEHICLE_PX[1] or \
                    box[2] - box[0] > max_w or _inframe_fraction(box, w, h) < 0.55:
                continue
            objects.append({"kind": "vehicle", "solid": solid, "pose": pose, "track_id": track})
            taken.append(entry(fp))
            boxes.append(box)
            track += 1
            break
    for _ in range(n_persons):
        look = _make_person_look(rng)
        cand = cam.ground(rng.uniform(-0.02 * w, 1.02 * w, 25), rng.uniform(0.08 * h, 1.1 * h, 25))
        for g in cand:
            if objects and rng.random() < 0.25:
                # near another object: partial occlusion on purpose
                other = objects[int(rng.integers(len(objects)))]
                base = np.asarray(other["pos"] if other["kind"] == "person" else other["pose"][:2])
                ang = rng.uniform(0, 2 * np.pi)
                rad = rng.uniform(0.6, 2.0) if other["kind"] == "person" else rng.uniform(1.8, 4.0)
                g = base + rad * np.array([math.cos(ang), math.sin(ang)])
            if not scene.walkable(g, road_ok=0.15):
                continue
            fp = _person_footprint(g)
            if not clear(fp, taken, 0.15):
                continue
            box = scene.person_px_box(g, look.height)
            if box is None or not 14 <= box[3] - box[1] <= _MAX_PERSON_PX or _inframe_fraction(box, w, h) < 0.6:
                continue
            ang = rng.uniform(0, 2 * np.pi) if rng.random() < 0.4 else lay.yaw(rng.choice([-1, 1])) + rng.normal(0,
                                                                                                                 0.2)
            moving = rng.random() < 0.8
            objects.append({"kind": "person", "look": look, "pos": (float(g[0]), float(g[1])),
                            "heading": (math.cos(ang), math.sin(ang)), "phase": float(rng.uniform(0, 2 * np.pi)),
                            "amp": float(rng.uniform(0.7, 1.0)) if moving else 0.0, "track_id": track})
            taken.append(entry(fp))
            boxes.append(box)
            track += 1
            break
    # keep occlusion partial: drop objects mostly hidden behind nearer ones (by projected box)
    dist = [math.hypot(*(o["pos"] if o["kind"] == "person" else o["pose"][:2])) for o in objects]
    keep = []
    for i, o in enumerate(objects):
        bi = boxes[i]
        area = max(1e-6, (bi[2] - bi[0]) * (bi[3] - bi[1]))
        covered = 0.0
        for j in range(len(objects)):
            if j == i or dist[j] >= dist[i] or j not in keep and j > i:
                continue
            bj = boxes[j]
            ix = max(0.0, min(bi[2], bj[2]) - max(bi[0], bj[0]))
            iy = max(0.0, min(bi[3], bj[3]) - max(bi[1], bj[1]))
            covered += ix * iy / area
        if covered < 0.6:
            keep.append(i)
    return [objects[i] for i in keep]


# =====================================================================================
# moving sequences


class _Driver:
    __slots__ = ("track_id", "solid", "lane", "s", "speed", "v_des")

    def __init__(self, track_id, solid, lane, s, speed, v_des):
        self.track_id, self.solid, self.lane, self.s, self.speed, self.v_des = track_id, solid, lane, s, speed, v_des


class _Walker:
    __slots__ = ("track_id", "look", "path", "seg", "pos", "speed", "phase", "heading", "amp", "anchor", "radius",
                 "target", "pause", "loiter", "wait")

    def __init__(self, track_id, look, pos, speed, heading):
        self.track_id, self.look = track_id, look
        self.pos = np.asarray(pos, np.float64)
        self.speed = speed
        self.heading = np.asarray(heading, np.float64)
        self.phase = 0.0
        self.amp = 1.0
        self.path: np.ndarray | None = None
        self.seg = 0
        self.anchor = None
        self.radius = 0.0
        self.target = None
        self.pause = 0.0
        self.loiter = False
        self.wait = 0.0


class _Traffic:
    def __init__(self, scene: _Scene, rng: np.random.Generator, fps: float, persons: int, vehicles: int,
                 loiterers: int) -> None:
        self.scene, self.rng, self.dt = scene, rng, 1.0 / fps
        self.n_persons, self.n_vehicles = persons, vehicles
        self.next_id = 1
        self.drivers: list[_Driver] = []
        self.walkers: list[_Walker] = []
        self.person_timers = [float(rng.exponential(1.5)) for _ in range(persons)]
        self.vehicle_timers = [float(rng.exponential(1.5)) for _ in range(vehicles)]
        lay = scene.layout
        # where along each lane / walking line / crossing an object shows (and is not tiny)
        self.lane_ranges = [self._visible_range(lambda s, t=ln.t: lay.world(s, t), 1.5, 10.0) for ln in lay.lanes]
        self.line_ranges = [self._visible_range(lambda s, t=tl: lay.world(s, t), 1.7, 9.0) for tl in lay.walk_lines]
        self.cross_ranges = [self._visible_range(lambda t, s=sc: lay.world(s, t), 1.7, 9.0,
                                                 np.arange(t0, t1 + 0.01, 0.25)) for sc, t0, t1 in lay.crossings]
        # initial population: already inside the view
        for _ in range(vehicles):
            self._spawn_driver(initial=True)
        for _ in range(persons):
            self._spawn_walker(initial=True)
        for _ in range(loiterers):
            self._spawn_loiterer()

    def can_drive(self) -> bool:
        return any(r is not None for r in self.lane_ranges)

    def can_walk(self) -> bool:
        return any(r is not None for r in self.line_ranges) or any(
            self._cross_terminal(j, e) is not None for j, r in enumerate(self.cross_ranges) if r is not None
            for e in (0, 1))

    # ---------------------------------------------------------------- helpers

    def _visible_range(self, world_of_s, height: float, min_px: float, grid: np.ndarray | None = None
                       ) -> tuple[float, float] | None:
        """The interval of the line parameter (s by default) where an object of `height` standing on the line
        is in frame and at least min_px tall."""
        lay, cam = self.scene.layout, self.scene.cam
        s = np.arange(lay.s_vis[0] - 60, lay.s_vis[1] + 60, 0.5) if grid is None else grid
        if len(s) == 0:
            return None
        g = world_of_s(s)
        pts = np.concatenate([np.column_stack([g, np.zeros(len(s))]), np.column_stack([g, np.full(len(s), height)])])
        uv, z = cam.project(pts)
        n = len(s)
        ok = (z[:n] > 1.0) & (z[n:] > 1.0)
        tall = np.hypot(*(uv[n:] - uv[:n]).T)
        inside = (uv[:n, 0] > -0.1 * cam.width) & (uv[:n, 0] < 1.1 * cam.width) & (uv[n:, 1] < cam.height) & (
            uv[:n, 1] > 0)
        good = ok & inside & (tall >= min_px)
        if not good.any():
            return None
        idx = np.flatnonzero(good)
        return float(s[idx[0]]), float(s[idx[-1]])

    def _new_id(self) -> int:
        i = self.next_id
        self.next_id += 1
        return i

    # ---------------------------------------------------------------- vehicles

    def _spawn_driver(self, initial: bool) -> bool:
        rng, lay = self.rng, self.scene.layout
        lanes = [i for i, r in enumerate(self.lane_ranges) if r is not None]
        if not lanes:
            return False
        li = lanes[int(rng.integers(len(lanes)))]
        lane = lay.lanes[li]
        lo, hi = self.lane_ranges[li]
        subtype = _vehicle_type(rng)
        if lay.kind == "carpark" and subtype in ("truck", "bus") and rng.random() < 0.7:
            subtype = "car"
        solid = _make_vehicle(rng, subtype, lay.right_hand)
        margin = solid.length / 2 + 2.0
        if initial:
            s = rng.uniform(lo, hi)
        else:
            s = lo - margin if lane.direction > 0 else hi + margin
        for d in self.drivers:
            if d.lane == li and abs(d.s - s) < (d.solid.length + solid.length) / 2 + 4.0:
                return False
        v_des = rng.uniform(6.0, 13.0) if lay.kind != "carpark" else rng.uniform(2.5, 5.0)
        if subtype in ("truck", "bus"):
            v_des *= 0.85
        self.drivers.append(_Driver(self._new_id(), solid, li, float(s), v_des * rng.uniform(0.7, 1.0), v_des))
        return True

    def _step_drivers(self) -> None:
        dt, lay = self.dt, self.scene.layout
        for d in self.drivers:
            lane = lay.lanes[d.lane]
            ahead = [o for o in self.drivers if o is not d and o.lane == d.lane and (o.s - d.s) * lane.direction > 0]
            gap = min(((o.s - d.s) * lane.direction - (o.solid.length + d.solid.length) / 2 for o in ahead),
                      default=1e9)
            # yield to pedestrians in the lane ahead
            for wk in self.walkers:
                s_w, t_w = lay.st(wk.pos)
                if abs(t_w - lane.t) < lane.width / 2 + _YIELD_MARGIN:
                    g = (s_w - d.s) * lane.direction - d.solid.length / 2 - 0.5
                    if g > -0.3:
                        gap = min(gap, max(g, 0.0))
            safe = 2.5 + d.speed * 1.2
            if gap < safe:
                target = max(0.0, min(d.v_des, (gap - 2.0) / 1.2))
            else:
                target = d.v_des
            acc = np.clip((target - d.speed) / dt, -7.0, 2.0)
            d.speed = max(0.0, d.speed + acc * dt)
            d.s += lane.direction * d.speed * dt
        keep = []
        for d in self.drivers:
            lo, hi = self.lane_ranges[d.lane]
            margin = d.solid.length / 2 + 2.5
            lane = lay.lanes[d.lane]
            if (lane.direction > 0 and d.s > hi + margin) or (lane.direction < 0 and d.s < lo - margin):
                continue
            keep.append(d)
        self.drivers = keep

    # ----------------------------------------------------------------- persons

    def _spawn_walker(self, initial: bool) -> bool:
        rng, lay = self.rng, self.scene.layout
        look = _make_person_look(rng)
        speed = float(np.clip(rng.normal(1.4, 0.15), 1.0, 1.8)) * (0.85 if look.subtype == "child" else 1.0)
        plan = self._plan_walk(float(rng.uniform(-0.45, 0.45)))
        if plan is None:
            return False
        path = np.array(plan, np.float64)
        world = lay.world(path[:, 0], path[:, 1])
        seglen = np.hypot(*np.diff(world, axis=0).T)
        keep = np.concatenate([[True], seglen > 1e-6])
        world = world[keep]
        if len(world) < 2:
            return False
        walker = _Walker(self._new_id(), look, world[0], speed, np.array([1.0, 0.0]))
        walker.path = world
        walker.phase = float(rng.uniform(0, 2 * np.pi))
        if initial:  # already somewhere along the way
            seglen = np.hypot(*np.diff(world, axis=0).T)
            walk = rng.uniform(0.1, 0.9) * float(seglen.sum())
            for k, ln in enumerate(seglen):
                if walk <= ln:
                    walker.seg = k
                    walker.pos = world[k] + (world[k + 1] - world[k]) * (walk / max(ln, 1e-9))
                    break
                walk -= ln
        d = walker.path[walker.seg + 1] - walker.pos
        if np.hypot(*d) > 1e-6:
            walker.heading = d / np.hypot(*d)
        self.walkers.append(walker)
        return True

    def _cross_terminal(self, j: int, end: int) -> float | None:
        """Where a walk along crossing j can start or finish at that end: off the frame, or at the door."""
        lay = self.scene.layout
        sc, t0, t1 = lay.crossings[j]
        lo, hi = self.cross_ranges[j]
        t_end = t0 if end == 0 else t1
        if lay.door is not None and abs(sc - lay.door[0]) < 0.6 and abs(t_end - lay.door[1]) < 0.8:
            return t_end
        if end == 0 and t0 < lo - 0.3:
            return max(t0, lo - 1.5)
        if end == 1 and t1 > hi + 0.3:
            return min(t1, hi + 1.5)
        return None

    def _line_exit(self, i: int, t: float) -> tuple[float, float]:
        lo, hi = self.line_ranges[i]
        return (lo - 1.5 if self.rng.random() < 0.5 else hi + 1.5), t

    def _plan_walk(self, offset: float) -> list[tuple[float, float]] | None:
        """A route in (s, t): in along a walking line or a crossing, maybe a turn or two, out of the frame
        (or through the door)."""
        rng, lay = self.rng, self.scene.layout
        lines = [i for i, r in enumerate(self.line_ranges) if r is not None]
        crosses = [j for j, r in enumerate(self.cross_ranges) if r is not None]
        starts = [("line", i, d) for i in lines for d in (1, -1)]
        starts += [("cross", j, e) for j in crosses for e in (0, 1) if self._cross_terminal(j, e) is not None]
        if not starts:
            return None
        kind, k, arg = starts[int(rng.integers(len(starts)))]
        if kind == "line":
            t_line = lay.walk_lines[k]
            lo, hi = self.line_ranges[k]
            s_from, s_to = (lo - 1.5, hi + 1.5) if arg > 0 else (hi + 1.5, lo - 1.5)
            path = [(s_from, t_line + offset)]
            turns = [j for j in crosses if lay.crossings[j][1] - 1.5 <= t_line <= lay.crossings[j][2] + 1.5
                     and lo < lay.crossings[j][0] < hi]
            if turns and rng.random() < 0.5:
                j = turns[int(rng.integers(len(turns)))]
                sc = lay.crossings[j][0] + offset
                path.append((sc, t_line + offset))
                rest = self._along_crossing(j, t_line, int(rng.choice([0, 1])), k, offset)
                if rest is not None:
                    return path + rest
                path.pop()
            path.append((s_to, t_line + offset))
            return path
        j, end = k, arg
        t_from = self._cross_terminal(j, end)
        sc = lay.crossings[j][0] + offset
        rest = self._along_crossing(j, t_from, 1 - end, None, offset)
        return None if rest is None else [(sc, t_from)] + rest

    def _along_crossing(self, j: int, t_from: float, towards: int, skip_line, offset: float):
        rng, lay = self.rng, self.scene.layout
        sc, t0, t1 = lay.crossings[j]
        sc += offset
        sign = 1.0 if towards == 1 else -1.0
        t_end = t1 if towards == 1 else t0
        options: list[tuple[str, int, float]] = []
        for i, r in enumerate(self.line_ranges):
            t_i = lay.walk_lines[i]
            if r is None or i == skip_line or not r[0] < sc < r[1]:
                continue
            if (t_i - t_from) * sign > 0.5 and (t_end - t_i) * sign > -1.5:
                options.append(("line", i, t_i))
        term = self._cross_terminal(j, towards)
        if term is not None:
            options.append(("end", -1, term))
        if not options:
            return None
        kind, i, t = options[int(rng.integers(len(options)))]
        if kind == "end":
            return [(sc, t)]
        return [(sc, t + offset), self._line_exit(i, t + offset)]

    def _spawn_loiterer(self) -> None:
        rng, scene = self.rng, self.scene
        w, h = scene.width, scene.height
        look = _make_person_look(rng, child=False)
        anchor = None
        radius = float(rng.uniform(1.0, 2.5))
        for _ in range(200):
            u, v = rng.uniform(0.15 * w, 0.85 * w), rng.uniform(0.3 * h, 0.9 * h)
            g = scene.cam.ground(np.array(u), np.array(v))
            if not scene.walkable(g, road_ok=0.0):
                continue
            ring_ok = all(scene.walkable(g + radius * np.array([math.cos(a), math.sin(a)]), 0.0)
                          for a in np.linspace(0, 2 * np.pi, 6, endpoint=False))
            if not ring_ok:
                continue
            box = scene.person_px_box(g, look.height)
            if box is None or box[3] - box[1] < 30:
                continue
            anchor = g
            break
        if anchor is None:
            anchor = scene.cam.ground(np.array(w / 2), np.array(0.75 * h))
            radius = 1.0
        walker = _Walker(self._new_id(), look, anchor + rng.uniform(-0.5, 0.5, 2) * radius,
                         float(rng.uniform(0.5, 0.9)), np.array([math.cos(a := rng.uniform(0, 6.3)), math.sin(a)]))
        walker.loiter = True
        walker.anchor = np.asarray(anchor, np.float64)
        walker.radius = radius
        walker.pause = float(rng.uniform(0, 3))
        walker.amp = 0.0
        self.walkers.append(walker)

    def _step_walkers(self) -> None:
        rng, dt, lay = self.rng, self.dt, self.scene.layout
        keep = []
        for wk in self.walkers:
            if wk.loiter:
                if wk.pause > 0:
                    wk.pause -= dt
                    wk.amp = max(0.0, wk.amp - dt * 3)
                    if wk.pause <= 0:
                        ang, rad = rng.uniform(0, 2 * np.pi), wk.radius * math.sqrt(rng.uniform(0, 1))
                        wk.target = wk.anchor + rad * np.array([math.cos(ang), math.sin(ang)])
                    keep.append(wk)
                    continue
                d = wk.target - wk.pos
                dist = float(np.hypot(*d))
                step = wk.speed * dt
                if dist <= step:
                    wk.pos = wk.target.copy()
                    wk.pause = float(rng.uniform(1.0, 5.0))
                else:
                    wk.heading = d / dist
                    wk.pos = wk.pos + wk.heading * step
                wk.amp = min(0.75, wk.amp + dt * 3)
                wk.phase += 2 * math.pi * step / (1.35 * wk.look.height / 1.72)
                keep.append(wk)
                continue
            if wk.wait > 0:
                wk.wait -= dt
                wk.amp = max(0.0, wk.amp - dt * 3)
                keep.append(wk)
                continue
            target = wk.path[wk.seg + 1]
            d = target - wk.pos
            dist = float(np.hypot(*d))
            step = wk.speed * dt
            # about to step onto the road with traffic coming: wait at the kerb
            if self._must_wait(wk, target):
                wk.wait = 0.5
                keep.append(wk)
                continue
            wk.amp = min(1.0, wk.amp + dt * 3)
            if dist <= step:
                wk.pos = target.copy()
                wk.seg += 1
                if wk.seg >= len(wk.path) - 1:
                    continue  # left the frame or went through the door
            else:
                wk.heading = d / dist
                wk.pos = wk.pos + wk.heading * step
            wk.phase += 2 * math.pi * step / (1.35 * wk.look.height / 1.72)
            keep.append(wk)
        self.walkers = keep

    def _must_wait(self, wk: _Walker, target: np.ndarray) -> bool:
        """At the kerb, about to cross lanes towards target: wait unless every lane on the way is clear
        for the time it takes to cross it. Once on the road a walker keeps going; drivers yield."""
        lay = self.scene.layout
        if not self.drivers:
            return False
        s0, t0 = lay.st(wk.pos)
        s1, t1 = lay.st(target)
        if abs(t1 - t0) < 1e-6:
            return False  # walking along the lanes
        if any(abs(t0 - ln.t) < ln.width / 2 + _WAIT_MARGIN for ln in lay.lanes):
            return False  # already on the road
        length = float(np.hypot(s1 - s0, t1 - t0))
        first = None
        windows = []
        for li, ln in enumerate(lay.lanes):
            half = ln.width / 2 + _WAIT_MARGIN
            k0, k1 = sorted(((ln.t - half - t0) / (t1 - t0), (ln.t + half - t0) / (t1 - t0)))
            if k1 < 0 or k0 > 1:
                continue
            k0 = max(k0, 0.0)
            first = k0 * length if first is None else min(first, k0 * length)
            windows.append((li, s0 + (s1 - s0) * k0, k0 * length / wk.speed, min(k1, 1.0) * length / wk.speed))
        if first is None or first > 1.0:
            return False  # no lane within a step or two
        for d in self.drivers:
            for li, s_cross, t_in, t_out in windows:
                if d.lane != li:
                    continue
                ahead = (s_cross - d.s) * lay.lanes[li].direction  # crossing point ahead of the vehicle centre
                reach = d.solid.length / 2 + 1.0
                if d.speed < 0.3:  # stopped: only its body blocks; walking in front of it is safe
                    if abs(ahead) < reach:
                        return True
                    continue
                if ahead < -reach:
                    continue  # already past
                arrive, clear = (ahead - reach) / d.speed, (ahead + reach) / d.speed
                if arrive < t_out + 1.0 and clear > t_in - 0.5:
                    return True
        return False

    # ------------------------------------------------------------------- tick

    def step(self) -> None:
        self._step_drivers()
        self._step_walkers()
        dt, rng = self.dt, self.rng
        n_walk = sum(1 for w in self.walkers if not w.loiter)
        for k in range(len(self.person_timers)):
            if n_walk >= self.n_persons:
                break
            self.person_timers[k] -= dt
            if self.person_timers[k] <= 0:
                if self._spawn_walker(initial=False):
                    n_walk += 1
                self.person_timers[k] = float(rng.exponential(2.0))
        n_drive = len(self.drivers)
        for k in range(len(self.vehicle_timers)):
            if n_drive >= self.n_vehicles:
                break
            self.vehicle_timers[k] -= dt
            if self.vehicle_timers[k] <= 0:
                if self._spawn_driver(initial=False):
                    n_drive += 1
                    self.vehicle_timers[k] = float(rng.exponential(2.0))
                else:
                    self.vehicle_timers[k] = 0.5

    def objects(self) -> list[dict]:
        lay = self.scene.layout
        out = []
        for d in self.drivers:
            lane = lay.lanes[d.lane]
            p = lay.world(d.s, lane.t)
            out.append({"kind": "vehicle", "solid": d.solid, "pose": (float(p[0]), float(p[1]),
                                                                      lay.yaw(lane.direction)),
                        "track_id": d.track_id})
        for wk in self.walkers:
            out.append({"kind": "person", "look": wk.look, "pos": (float(wk.pos[0]), float(wk.pos[1])),
                        "heading": (float(wk.heading[0]), float(wk.heading[1])), "phase": wk.phase, "amp": wk.amp,
                        "track_id": wk.track_id})
        return out
