"""Procedural renderer of metal parts on a conveyor belt, with labelled surface defects.

The simulated camera and the model build both draw from here, so the shipped
detector is trained and tested on the same kind of picture the demo shows.
Everything is numpy + cv2 and deterministic per seed.

Frames are BGR uint8. The belt runs left to right; guide rails frame it at the
top and bottom of the picture.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DEFECT_KINDS = ("scratch", "dent", "stain")
SEVERITIES = ("minor", "major", "critical")

# Chosen so that about a third of defective parts carry at least one critical defect
# (with 1-3 defects per defective part, see _DEFECT_COUNT_WEIGHTS).
_SEVERITY_WEIGHTS = (0.40, 0.35, 0.25)
_DEFECT_COUNT_WEIGHTS = (0.60, 0.30, 0.10)

# Visible size / contrast per severity at 640x480. The smallest still spans several
# pixels after the detector's downscale to 320. Neighbouring grades meet at a boundary
# (scratch length 60 px: minor below, major above); the grading spec keeps a tolerance band
# around each boundary (GRADE_TOLERANCE) that no automatically graded defect falls into.
_SCRATCH_LENGTH = {"minor": (34, 60), "major": (60, 100), "critical": (100, 160)}
_SCRATCH_WIDTH = {"minor": (2.2, 3.0), "major": (3.0, 4.0), "critical": (4.0, 5.5)}
_SCRATCH_CONTRAST = {"minor": (45, 60), "major": (60, 80), "critical": (80, 115)}
_DENT_RADIUS = {"minor": (8, 11), "major": (11, 17), "critical": (17, 28)}
_DENT_CONTRAST = {"minor": (40, 55), "major": (55, 75), "critical": (75, 105)}
_STAIN_RADIUS = {"minor": (9, 12), "major": (12, 19), "critical": (19, 32)}
_STAIN_OPACITY = {"minor": (0.40, 0.50), "major": (0.50, 0.62), "critical": (0.62, 0.80)}

# The grading spec's tolerance band, relative to each boundary: with 0.06 a minor scratch is at
# most 60 * 0.94 = 56.4 px long and a major one at least 60 * 1.06 = 63.6 px, and so on for
# every size, width, contrast and opacity range. Like a real inspection spec, where a defect in
# the band goes to a human for re-grading: the simulator draws none there, so every defect it
# labels has one unambiguous grade. Without the band (grade_tolerance=0) a defect drawn right at
# a boundary looks the same under either grade, and no classifier can get those right.
GRADE_TOLERANCE = 0.06

_MIN_BLOB_SIDE = 14  # px, short side of a dent or stain box
_MIN_SCRATCH_SIDE = 12  # px, short side of a scratch box: scratches run diagonally
_DEFECT_GAP = 10  # px kept free between two defects' boxes
_VISIBLE_ALPHA = 0.3  # a defect pixel counts towards the tight box above this strength

_RAIL_HEIGHT = 34
_SEAM_SPACING = 420


@dataclass(frozen=True)
class Defect:
    kind: str
    severity: str
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in frame pixels, tight, inclusive-exclusive


@dataclass(frozen=True)
class RenderedPart:
    image: np.ndarray  # HxWx3 uint8 BGR
    defects: tuple[Defect, ...]

    @property
    def good(self) -> bool:
        return not self.defects

    @property
    def critical(self) -> bool:
        return any(d.severity == "critical" for d in self.defects)


class PartRenderer:
    """Renders one part per call; the sequence is fixed by ``seed``."""

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        seed: int = 0,
        defect_rate: float = 0.35,
        light_jitter: float = 0.25,
        noise_sigma: float = 6.0,
        grade_tolerance: float = GRADE_TOLERANCE,
    ) -> None:
        if width < 160 or height < 120:
            raise ValueError(f"frame {width}x{height} is too small; use at least 160x120")
        if not 0 <= grade_tolerance < 0.2:
            raise ValueError(f"grade_tolerance {grade_tolerance} must be in [0, 0.2)")
        self.grade_tolerance = grade_tolerance
        self.width = width
        self.height = height
        self.defect_rate = defect_rate
        self.light_jitter = light_jitter
        self.noise_sigma = noise_sigma
        self._rng = np.random.default_rng(seed)
        # Sizes are tuned at 640x480; other frame sizes scale them.
        self._scale = min(width / 640.0, height / 480.0)
        self._rail = max(8, int(round(_RAIL_HEIGHT * self._scale)))
        self._belt_strip = self._make_belt_strip()
        self._belt_offset = float(self._rng.uniform(0, self._belt_strip.shape[1] - width))

    # ------------------------------------------------------------------ public

    def render(self) -> RenderedPart:
        rng = self._rng
        canvas = self._belt_frame()
        mask = self._part_mask()
        canvas = self._drop_shadow(canvas, mask)
        canvas = self._paint_part(canvas, mask)

        defects: list[Defect] = []
        if rng.random() < self.defect_rate:
            count = int(rng.choice(len(_DEFECT_COUNT_WEIGHTS), p=_DEFECT_COUNT_WEIGHTS)) + 1
            for _ in range(count):
                defect = self._add_defect(canvas, mask, defects)
                if defect is not None:
                    defects.append(defect)
        image = self._camera(canvas)
        return RenderedPart(image=image, defects=tuple(defects))

    def render_empty_belt(self) -> np.ndarray:
        return self._camera(self._belt_frame())

    # -------------------------------------------------------------------- belt

    def _make_belt_strip(self) -> np.ndarray:
        """A belt texture twice the frame width; each frame shows a window of it."""
        rng = self._rng
        h, w = self.height, self.width * 2
        base = float(rng.uniform(50, 64))
        # Rubber belts show lengthwise streaks (along the travel direction) and fine grain.
        rows = cv2.GaussianBlur(rng.normal(0, 4.0, (h, 1)).astype(np.float32), (1, 0), 3).reshape(h, 1)
        grain = cv2.GaussianBlur(rng.normal(0, 5.0, (h, w)).astype(np.float32), (0, 0), 1.2)
        streaks = cv2.blur(rng.normal(0, 6.0, (h, w)).astype(np.float32), (41, 1))
        x = np.arange(w, dtype=np.float32)
        weave = 1.5 * np.sin(x * (2 * np.pi / 7.0))[None, :]
        belt = base + rows + grain + streaks + weave
        # Vulcanised seams across the belt.
        seam_w = max(2, int(round(4 * self._scale)))
        for sx in range(int(rng.uniform(60, _SEAM_SPACING)), w, _SEAM_SPACING):
            belt[:, sx : sx + seam_w] -= 14.0
            belt[:, sx + seam_w : sx + 2 * seam_w] += 6.0
        belt = np.repeat(belt[:, :, None], 3, axis=2)
        # Guide rails: brushed steel at the top and bottom edges.
        r = self._rail
        rail_profile = np.linspace(1.0, 0.75, r, dtype=np.float32)[:, None]
        rail_noise = cv2.blur(rng.normal(0, 5.0, (r, w)).astype(np.float32), (31, 1))
        rail = 118.0 * rail_profile + rail_noise
        belt[:r] = rail[:, :, None]
        belt[h - r :] = rail[::-1][:, :, None]
        belt[r : r + 2] = 25.0
        belt[h - r - 2 : h - r] = 25.0
        return belt.astype(np.float32)

    def _belt_frame(self) -> np.ndarray:
        strip_w = self._belt_strip.shape[1]
        self._belt_offset = (self._belt_offset + float(self._rng.uniform(90, 300))) % (strip_w - self.width)
        x0 = int(self._belt_offset)
        return self._belt_strip[:, x0 : x0 + self.width].copy()

    # -------------------------------------------------------------------- part

    def _part_mask(self) -> np.ndarray:
        """Antialiased float mask in [0, 1] of a disc or rotated rounded rectangle."""
        rng = self._rng
        h, w = self.height, self.width
        belt_h = h - 2 * self._rail
        size = float(rng.uniform(0.48, 0.80)) * belt_h
        cy = h / 2 + rng.uniform(-0.5, 0.5) * (belt_h - size) * 0.8
        cx = w / 2 + rng.uniform(-0.5, 0.5) * (w - size * 1.5) * 0.8
        shift = 4  # sub-pixel drawing
        mask = np.zeros((h, w), np.uint8)
        if rng.random() < 0.35:
            r = size / 2
            cv2.circle(mask, (int(cx * 16), int(cy * 16)), int(r * 16), 255, -1, cv2.LINE_AA, shift)
        else:
            aspect = float(rng.uniform(1.0, 1.6))
            ph = size / np.sqrt(aspect) * 0.95
            pw = ph * aspect
            pw = min(pw, w - 2 * abs(cx - w / 2) - 20, (belt_h * 1.1))
            corner = float(rng.uniform(0.08, 0.3)) * min(pw, ph)
            angle = float(rng.uniform(-25, 25)) * np.pi / 180
            pts = _rounded_rect(pw, ph, corner)
            rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            pts = pts @ rot.T + np.array([cx, cy])
            # A rotated part must stay between the rails.
            lo = pts.min(axis=0)
            hi = pts.max(axis=0)
            dy = max(0.0, self._rail + 6 - lo[1]) - max(0.0, hi[1] - (h - self._rail - 6))
            dx = max(0.0, 6 - lo[0]) - max(0.0, hi[0] - (w - 6))
            pts = pts + np.array([dx, dy])
            cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 255, cv2.LINE_AA, shift)
        return mask.astype(np.float32) / 255.0

    def _drop_shadow(self, canvas: np.ndarray, mask: np.ndarray) -> np.ndarray:
        rng = self._rng
        dx, dy = rng.uniform(3, 12), rng.uniform(3, 12)
        shifted = cv2.warpAffine(mask, np.float32([[1, 0, dx], [0, 1, dy]]), (self.width, self.height))
        shadow = cv2.GaussianBlur(shifted, (0, 0), 6)
        canvas *= (1.0 - 0.45 * shadow)[:, :, None]
        return canvas

    def _paint_part(self, canvas: np.ndarray, mask: np.ndarray) -> np.ndarray:
        rng = self._rng
        ys, xs = np.nonzero(mask > 0.5)
        cy, cx = float(ys.mean()), float(xs.mean())
        # Work on the part's bounding box only; the rest of the frame is belt.
        pad = 4
        x0, y0 = max(0, int(xs.min()) - pad), max(0, int(ys.min()) - pad)
        x1, y1 = min(self.width, int(xs.max()) + pad + 1), min(self.height, int(ys.max()) + pad + 1)
        m2 = mask[y0:y1, x0:x1]
        h, w = m2.shape
        yy = (np.arange(y0, y1, dtype=np.float32) - cy)[:, None]
        xx = (np.arange(x0, x1, dtype=np.float32) - cx)[None, :]
        base = float(rng.uniform(135, 195))
        tint = np.array([rng.uniform(-6, 10), rng.uniform(-4, 4), rng.uniform(-8, 6)], np.float32)
        # Broad shading from the overhead lamp.
        theta = rng.uniform(0, 2 * np.pi)
        extent = max(w, h) / 2
        shade = np.float32(rng.uniform(12, 30) / extent) * (xx * np.float32(np.cos(theta)) + yy * np.float32(np.sin(theta)))
        # A wide soft specular band: benign, far wider than any scratch.
        phi = rng.uniform(0, np.pi)
        band_pos = rng.uniform(-0.6, 0.6) * extent
        band_w = rng.uniform(0.25, 0.6) * extent
        d = (xx * np.float32(np.cos(phi)) + yy * np.float32(np.sin(phi)) - np.float32(band_pos)) / np.float32(band_w)
        spec = np.float32(rng.uniform(8, 30)) * np.exp(-0.5 * d * d)
        # Brushed finish: fine, low-contrast grain along one direction.
        grain = rng.standard_normal((h, w), dtype=np.float32) * np.float32(6.0)
        k = 21
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2, :] = 1.0
        brush_angle = rng.uniform(0, 180)
        kernel = cv2.warpAffine(kernel, cv2.getRotationMatrix2D((k // 2, k // 2), brush_angle, 1.0), (k, k))
        kernel /= max(float(kernel.sum()), 1e-6)
        grain = cv2.filter2D(grain, -1, kernel) * np.float32(1.6)
        metal = np.float32(base) + shade + spec + grain
        # Bevelled rim: a darker band just inside the edge.
        soft = cv2.GaussianBlur(m2, (0, 0), 2.5)
        rim = np.clip((m2 - soft) * 4.0, 0, 1) + np.clip((0.5 - soft) * m2 * 2.0, 0, 1)
        metal = metal - np.float32(30.0) * np.clip(rim, 0, 1)
        part = metal[:, :, None] + tint[None, None, :]
        m = m2[:, :, None]
        roi = canvas[y0:y1, x0:x1]
        roi[:] = roi * (1 - m) + part * m
        return canvas

    # ----------------------------------------------------------------- defects

    def _add_defect(self, canvas: np.ndarray, part_mask: np.ndarray, placed: list[Defect]) -> Defect | None:
        rng = self._rng
        kind = DEFECT_KINDS[int(rng.integers(len(DEFECT_KINDS)))]
        severity = SEVERITIES[int(rng.choice(len(SEVERITIES), p=_SEVERITY_WEIGHTS))]
        inner = cv2.erode((part_mask > 0.99).astype(np.uint8), np.ones((9, 9), np.uint8))
        ys, xs = np.nonzero(inner)
        if len(xs) == 0:
            return None
        min_side = (_MIN_SCRATCH_SIDE if kind == "scratch" else _MIN_BLOB_SIDE) * self._scale
        for _ in range(40):
            i = int(rng.integers(len(xs)))
            centre = (float(xs[i]), float(ys[i]))
            draw = {"scratch": self._scratch, "dent": self._dent, "stain": self._stain}[kind]
            alpha, paint, visible, (x0, y0) = draw(severity, centre, canvas)
            ph, pw = alpha.shape
            if x0 < 0 or y0 < 0 or x0 + pw > self.width or y0 + ph > self.height:
                continue
            if (alpha > 0.02)[inner[y0 : y0 + ph, x0 : x0 + pw] == 0].any():
                continue  # must lie wholly on the part
            if not visible.any():
                continue
            bx1, by1, bx2, by2 = _tight_box(visible)
            box = (bx1 + x0, by1 + y0, bx2 + x0, by2 + y0)
            if min(box[2] - box[0], box[3] - box[1]) < min_side:
                continue
            if any(_boxes_near(box, d.box, _DEFECT_GAP) for d in placed):
                continue
            roi = canvas[y0 : y0 + ph, x0 : x0 + pw]
            a = alpha[:, :, None]
            roi[:] = roi * (1 - a) + paint * a
            return Defect(kind=kind, severity=severity, box=box)
        return None

    def _patch(self, centre: tuple[float, float], half: float):
        """Integer patch origin/size around centre, and the centre in patch coordinates."""
        half = int(np.ceil(half)) + 3
        x0, y0 = int(centre[0]) - half, int(centre[1]) - half
        return x0, y0, 2 * half + 1, (centre[0] - x0, centre[1] - y0)

    def _scratch(self, severity: str, centre: tuple[float, float], canvas: np.ndarray):
        rng, s = self._rng, self._scale
        length = rng.uniform(*self._grade(_SCRATCH_LENGTH, severity)) * s
        width = rng.uniform(*self._grade(_SCRATCH_WIDTH, severity)) * s
        contrast = rng.uniform(*self._grade(_SCRATCH_CONTRAST, severity))
        # Diagonal runs keep the box from degenerating into a sliver.
        angle = np.deg2rad(rng.uniform(25, 65) + 90 * int(rng.integers(4)))
        bow = rng.uniform(-0.12, 0.12)
        sign = 1.0 if rng.random() < 0.6 else -1.0  # fresh metal usually shows bright
        x0, y0, size, (cx, cy) = self._patch(centre, length * 0.6 + width)
        direction = np.array([np.cos(angle), np.sin(angle)])
        normal = np.array([-direction[1], direction[0]])
        c = np.array([cx, cy])
        p0 = c - direction * length / 2
        p2 = c + direction * length / 2
        p1 = c + normal * bow * length
        t = np.linspace(0, 1, 48)[:, None]
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        line = np.zeros((size, size), np.uint8)
        cv2.polylines(line, [np.round(curve * 16).astype(np.int32)], False, 255,
                      max(1, int(round(width))), cv2.LINE_AA, 4)
        alpha = np.clip(cv2.GaussianBlur(line.astype(np.float32) / 255.0, (0, 0), 0.6) * 1.15, 0, 1)
        level = self._local_level(canvas, centre) + sign * contrast
        return alpha, np.float32(level), alpha > _VISIBLE_ALPHA, (x0, y0)

    def _dent(self, severity: str, centre: tuple[float, float], canvas: np.ndarray):
        rng, s = self._rng, self._scale
        a = rng.uniform(*self._grade(_DENT_RADIUS, severity)) * s
        b = a * rng.uniform(0.7, 1.0)
        contrast = rng.uniform(*self._grade(_DENT_CONTRAST, severity))
        rot = rng.uniform(0, np.pi)
        light = rng.uniform(0, 2 * np.pi)
        x0, y0, size, (cx, cy) = self._patch(centre, a)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        dx, dy = xx - cx, yy - cy
        u = (dx * np.cos(rot) + dy * np.sin(rot)) / a
        v = (-dx * np.sin(rot) + dy * np.cos(rot)) / b
        r2 = u * u + v * v
        alpha = np.clip((1.0 - r2) * 3.0, 0, 1).astype(np.float32)  # soft-edged ellipse
        # Concave: the wall facing the lamp is in shadow, the far wall catches the light.
        slope = (dx * np.cos(light) + dy * np.sin(light)) / a
        base = self._local_level(canvas, centre)
        level = base + contrast * np.clip(slope * 1.3, -1, 1) - 0.35 * contrast * (1 - np.sqrt(np.clip(r2, 0, 1)))
        return alpha, level[:, :, None].astype(np.float32), alpha > _VISIBLE_ALPHA, (x0, y0)

    def _stain(self, severity: str, centre: tuple[float, float], canvas: np.ndarray):
        rng, s = self._rng, self._scale
        radius = rng.uniform(*self._grade(_STAIN_RADIUS, severity)) * s
        opacity = rng.uniform(*self._grade(_STAIN_OPACITY, severity))
        x0, y0, size, (cx, cy) = self._patch(centre, radius * 1.2)
        blob = np.zeros((size, size), np.uint8)
        cv2.circle(blob, (int(cx * 16), int(cy * 16)), int(radius * 0.75 * 16), 255, -1, cv2.LINE_AA, 4)
        for _ in range(int(rng.integers(3, 7))):
            ang = rng.uniform(0, 2 * np.pi)
            dist = rng.uniform(0.2, 0.5) * radius
            r = rng.uniform(0.3, 0.5) * radius
            p = (cx + dist * np.cos(ang), cy + dist * np.sin(ang))
            axes = (int(r * 16), int(r * rng.uniform(0.6, 1.0) * 16))
            cv2.ellipse(blob, (int(p[0] * 16), int(p[1] * 16)), axes, rng.uniform(0, 180), 0, 360, 255,
                        -1, cv2.LINE_AA, 4)
        shape = cv2.GaussianBlur(blob.astype(np.float32) / 255.0, (0, 0), max(1.0, radius * 0.12))
        shape = np.clip(shape * 1.25, 0, 1)
        colours = (
            np.array([30, 55, 95], np.float32),  # rust
            np.array([38, 34, 30], np.float32),  # oil
            np.array([70, 85, 80], np.float32),  # dried coolant
        )
        colour = colours[int(rng.integers(len(colours)))]
        return shape * opacity, colour, shape > _VISIBLE_ALPHA, (x0, y0)

    def _grade(self, ranges: dict[str, tuple[float, float]], severity: str) -> tuple[float, float]:
        """The range a severity's parameter is drawn from: its spec range less the tolerance band
        at every boundary it shares with a neighbouring grade."""
        return grade_range(ranges, severity, self.grade_tolerance)

    @staticmethod
    def _local_level(canvas: np.ndarray, centre: tuple[float, float]) -> float:
        x, y = int(centre[0]), int(centre[1])
        return float(canvas[max(0, y - 6) : y + 7, max(0, x - 6) : x + 7].mean())

    # ------------------------------------------------------------------ camera

    def _camera(self, canvas: np.ndarray) -> np.ndarray:
        rng, lj = self._rng, self.light_jitter
        h, w = self.height, self.width
        gain = 1.0 + lj * rng.uniform(-0.8, 0.8)
        contrast = 1.0 + lj * rng.uniform(-0.6, 0.6)
        temp = lj * rng.uniform(-1, 1)
        channel = np.array([1.0 - 0.25 * temp, 1.0, 1.0 + 0.25 * temp], np.float32)
        mean = float(canvas.mean())
        img = (canvas - np.float32(mean)) * np.float32(contrast) + np.float32(mean)
        # Uneven lighting across the field of view.
        gx, gy = rng.uniform(-1, 1, 2) * lj * 0.35
        fx = (gx * (np.arange(w, dtype=np.float32) / w - 0.5)).astype(np.float32)
        fy = (gy * (np.arange(h, dtype=np.float32) / h - 0.5)).astype(np.float32)
        field = np.float32(gain) * (1.0 + fx[None, :] + fy[:, None])
        img *= field[:, :, None]
        img *= channel
        if rng.random() < 0.2:
            img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.6, 1.3)))
        sigma = self.noise_sigma * float(rng.uniform(0.6, 1.2))
        if sigma > 0:
            img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
        return np.clip(img, 0, 255).astype(np.uint8)


def grade_range(ranges: dict[str, tuple[float, float]], severity: str, tolerance: float) -> tuple[float, float]:
    """ranges[severity] shrunk by `tolerance` (relative) at each boundary shared with the
    next lower or higher grade; the outer ends (the smallest minor, the largest critical) stay."""
    lo, hi = ranges[severity]
    i = SEVERITIES.index(severity)
    if i > 0:
        lo *= 1 + tolerance
    if i < len(SEVERITIES) - 1:
        hi *= 1 - tolerance
    return lo, hi


def _rounded_rect(w: float, h: float, r: float) -> np.ndarray:
    pts = []
    corners = ((w / 2 - r, h / 2 - r, 0), (-w / 2 + r, h / 2 - r, 90), (-w / 2 + r, -h / 2 + r, 180),
               (w / 2 - r, -h / 2 + r, 270))
    for cx, cy, start in corners:
        for a in np.deg2rad(np.linspace(start, start + 90, 10)):
            pts.append((cx + r * np.cos(a), cy + r * np.sin(a)))
    return np.array(pts)


def _tight_box(visible: np.ndarray) -> tuple[int, int, int, int]:
    ys = np.nonzero(visible.any(axis=1))[0]
    xs = np.nonzero(visible.any(axis=0))[0]
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def _boxes_near(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1])
