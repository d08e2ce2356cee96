"""Procedural renderer of a retail self-checkout: products on a weighing-scale platter.

A camera looks straight down at the scale. Each frame shows 1-3 products from
``hw_sim.products.CATALOG`` lying or standing on the platter, sometimes with a
shopper's hand reaching in from an edge. Every product comes with a tight box, so
the renders can train and test a one-class product detector and a classifier on its
crops.

How a frame is made:

* the platter and the counter around it are fixed per renderer (per seed), like a
  real installation; ``render_empty`` shows them under the current light;
* each product is painted top-down in its own frame (a "sprite"): organic outlines,
  relief shading and gloss from the lamp direction, printed labels; upright cans,
  bottles and tall packs show a sliver of side wall, displaced away from the
  optical centre as a wide-angle lens would show it;
* the sprite is rotated, placed, casts a soft shadow and is composited;
* the camera stage applies the frame's light (gain, contrast, colour temperature,
  uneven field), an occasional defocus, and sensor noise.

Boxes are tight around the pixels where a product is visible (alpha > 0.5 after
occlusion by later products and by the hand), so an occluded side shrinks the box.
Everything is numpy + cv2 and deterministic per seed. Frames are BGR uint8.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .products import CATALOG, Product, by_sku

_ITEM_COUNT_WEIGHTS = (0.70, 0.20, 0.10)  # 1, 2, 3 items
_PX_PER_MM = (0.8, 1.2)  # at 640x480
_MIN_BOX_SIDE = 40  # px at 640x480, short side of every product box
_BOX_MARGIN = 2  # px kept between a box and the frame edge
_MAX_IOU = 0.1
_MAX_OVERLAP = 0.2  # intersection over the smaller box: a big bag may not bury a lemon
_VISIBLE_ALPHA = 0.5
_HAND_RATE = 0.15
_HAND_COVER = (0.06, 0.22)  # target share of the item the hand covers; hard limit below
_MAX_HAND_COVER = 0.25
_MOTION_BLUR_RATE = 0.12  # per item: moved while the shutter was open
_DEFOCUS_RATE = 0.2
_CAMERA_HEIGHT_MM = 1500.0
_MAX_PARALLAX = 0.12  # cap on the top-vs-base displacement, as a share of the offset from centre

# Physical height of each shape: shadow length and side-wall parallax.
_HEIGHT_MM = {
    "banana": 40, "apple": 75, "citrus": 78, "lemon": 58, "tomato": 60, "cucumber": 50,
    "broccoli": 90, "potato": 55, "pepper": 80, "avocado": 65, "can": 115, "bottle": 280,
    "carton": 195, "cup": 70, "box": 65, "block": 45, "bag": 60, "tray": 45, "eggbox": 70,
}

_SKIN_TONES = ((165, 190, 235), (140, 170, 220), (115, 150, 200), (90, 125, 175), (65, 90, 135), (50, 70, 105))
_SLEEVE_COLOURS = ((60, 40, 30), (40, 40, 45), (150, 150, 150), (40, 60, 140), (130, 90, 40), (200, 200, 205))

_F32 = np.float32
_AA = cv2.LINE_AA


@dataclass(frozen=True)
class PlacedProduct:
    sku: str
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in frame pixels, tight, inclusive-exclusive


@dataclass(frozen=True)
class CheckoutScene:
    image: np.ndarray  # HxWx3 uint8 BGR
    items: tuple[PlacedProduct, ...]
    # When a hand is in the frame: the same scene the moment after the hand was lifted (same light,
    # defocus and sensor noise; boxes without the hand's occlusion). None: no hand in the frame.
    lifted: CheckoutScene | None = None


@dataclass(frozen=True)
class _Light:
    scale: np.ndarray  # HxWx3 float32: contrast x gain x uneven field x colour temperature
    offset: np.ndarray  # HxWx3 float32: the contrast pivot's share, times the same field
    direction: tuple[float, float]  # unit vector in the frame, towards the lamp
    elevation: float  # radians
    shadow: float  # shadow strength 0..1
    shadow_len: float  # px of shadow offset per mm of height per px/mm


@dataclass
class _Item:
    product: Product
    premul: np.ndarray  # h x w x 3 float32, colour x alpha
    alpha: np.ndarray  # h x w float32
    ox: int  # frame position of the arrays' top-left corner (may be negative)
    oy: int
    box: tuple[int, int, int, int]  # tight box of alpha > 0.5, frame pixels
    height_px: float


class CheckoutRenderer:
    """Renders one self-checkout frame per call; the sequence is fixed by ``seed``."""

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        seed: int = 0,
        light_jitter: float = 0.25,
        noise_sigma: float = 5.0,
    ) -> None:
        if width < 320 or height < 240:
            raise ValueError(f"frame {width}x{height} is too small; use at least 320x240")
        self.width = width
        self.height = height
        self.light_jitter = light_jitter
        self.noise_sigma = noise_sigma
        self._rng = np.random.default_rng(seed)
        # Sizes are tuned at 640x480; other frame sizes scale them.
        self._scale = min(width / 640.0, height / 480.0)
        self._tex = _texture_bank(self._rng)
        self._noise = self._rng.standard_normal((height + 24, width + 24, 3), dtype=np.float32)
        self._background, self._platter = self._make_background()
        self._pivot = float(self._background.mean())
        self._light = self._draw_light()

    # ------------------------------------------------------------------ public

    def render(self, skus: list[str] | None = None) -> CheckoutScene:
        """A frame with the given products (in drawing order), or 1-3 random ones."""
        rng = self._rng
        if skus is None:
            count = int(rng.choice(len(_ITEM_COUNT_WEIGHTS), p=_ITEM_COUNT_WEIGHTS)) + 1
            products = [CATALOG[int(rng.integers(len(CATALOG)))] for _ in range(count)]
        else:
            products = [by_sku(s) for s in skus]
        self._light = self._draw_light()
        canvas = self._background.copy()
        items: list[_Item] = []
        for product in products:
            item = self._place(product, items, strict=skus is None)
            if item is not None:
                items.append(item)
        for item in items:
            self._cast_shadow(canvas, item.alpha, item.ox, item.oy, item.height_px, contact=True)
            _composite(canvas, item.premul, item.alpha, item.ox, item.oy)
        cover = np.zeros((self.height, self.width), np.float32)
        lifted = None
        if items and rng.random() < _HAND_RATE:
            hand = self._hand(items)
            if hand is not None:
                lifted = canvas.copy()
                premul, alpha, ox, oy = hand
                self._cast_shadow(canvas, alpha, ox, oy, 110.0 * self._scale, contact=False)
                _composite(canvas, premul, alpha, ox, oy)
                _paste_max(cover, alpha, ox, oy)
        boxes = _visible_boxes(items, cover)
        clear = None
        if lifted is not None:  # the camera stage's own draws replayed, so the sequence stays the seed's
            state = rng.bit_generator.state
            clear_image = self._camera(lifted)
            rng.bit_generator.state = state
            clear = CheckoutScene(clear_image, tuple(PlacedProduct(it.product.sku, b) for it, b in
                                                     zip(items, _visible_boxes(items, np.zeros_like(cover)))))
        image = self._camera(canvas)
        placed = tuple(PlacedProduct(sku=it.product.sku, box=b) for it, b in zip(items, boxes))
        return CheckoutScene(image=image, items=placed, lifted=clear)

    def render_empty(self) -> np.ndarray:
        """The empty platter under the light of the latest ``render`` (fresh sensor noise)."""
        return self._camera(self._background.copy())

    def with_hand(self, image: np.ndarray, target: tuple[float, float], seed: int, reach: float = 1.0) -> np.ndarray:
        """A copy of a frame with a shopper's hand and forearm over it, reaching from the bottom or a
        side edge towards ``target`` (frame pixels), ``reach`` of the way (1: fingertips there).

        For the moments around a frame: the hand putting products down or taking them off. Its own
        random stream (``seed``): it never changes what ``render`` draws next.
        """
        rng = np.random.default_rng(seed)
        sc = self._scale
        tx, ty = float(target[0]), float(target[1])
        edge = int(rng.choice(3, p=(0.5, 0.25, 0.25)))  # bottom, left, right
        if edge == 0:
            entry = np.array([tx + rng.uniform(-0.3, 0.3) * self.width, self.height + 20 * sc])
        elif edge == 1:
            entry = np.array([-20 * sc, ty + rng.uniform(-0.3, 0.3) * self.height])
        else:
            entry = np.array([self.width + 20 * sc, ty + rng.uniform(-0.3, 0.3) * self.height])
        direction = np.array([tx, ty]) - entry
        dist = float(np.linalg.norm(direction))
        direction /= max(dist, 1e-6)
        geom = _HandGeometry(rng, sc)
        premul, alpha, ox, oy = geom.render(entry, direction, dist * float(np.clip(reach, 0.2, 1.0)), self.width,
                                            self.height, self._tex, np.array(self._light.direction))
        canvas = image.astype(np.float32)
        # The hand is lit by the frame's light: its paint is in scene units like the products'.
        light = self._light.scale
        fs, ls = _clip_slices(ox, oy, alpha.shape[1], alpha.shape[0], self.width, self.height)
        if fs is not None:
            roi = canvas[fs]
            a = alpha[ls][:, :, None]
            roi *= 1.0 - a
            roi += premul[ls] * light[fs] + a * self._light.offset[fs]
        return np.clip(canvas, 0, 255).astype(np.uint8)

    # -------------------------------------------------------------- background

    def _make_background(self) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        rng, s = self._rng, self._scale
        h, w = self.height, self.width
        yy = np.arange(h, dtype=np.float32)[:, None]
        xx = np.arange(w, dtype=np.float32)[None, :]
        fine = _noise_field(rng, (h, w), 0.8)
        mid = _noise_field(rng, (h, w), 4.0)
        coarse = _noise_field(rng, (h, w), 30.0)
        # Counter top around the scale.
        kind = int(rng.integers(4))
        base = np.array(((62, 62, 64), (165, 178, 190), (80, 110, 150), (38, 38, 42))[kind], np.float32)
        base = base + rng.uniform(-10, 10, 3).astype(np.float32)
        lum = 3.0 * mid + 5.0 * coarse + (8.0 if kind != 3 else 5.0) * fine
        if kind == 2:  # wood grain
            lum = lum + 14.0 * np.sin(yy * _F32(0.35 / s) + 2.5 * coarse + 0.8 * mid)
        canvas = base[None, None, :] + lum[:, :, None]

        # Platter: brushed stainless steel in a slightly darker frame, set into the counter.
        pw = w * rng.uniform(0.76, 0.84)
        ph = h * rng.uniform(0.80, 0.88)
        cx = w / 2 + rng.uniform(-0.03, 0.03) * w
        cy = h / 2 + rng.uniform(-0.03, 0.03) * h
        x0, y0 = int(cx - pw / 2), int(cy - ph / 2)
        x1, y1 = int(cx + pw / 2), int(cy + ph / 2)
        corner = 12 * s
        gap = max(2, int(round(4 * s)))
        slot = np.zeros((h, w), np.uint8)
        cv2.fillPoly(slot, [_fixed(_rounded_rect_pts(x0 - gap, y0 - gap, x1 + gap, y1 + gap, corner + gap))], 255, _AA, 4)
        plate = np.zeros((h, w), np.uint8)
        cv2.fillPoly(plate, [_fixed(_rounded_rect_pts(x0, y0, x1, y1, corner))], 255, _AA, 4)
        slot_f = slot.astype(np.float32) / 255.0
        plate_f = plate.astype(np.float32) / 255.0
        canvas = canvas * (1 - slot_f[:, :, None]) + np.float32(20.0) * slot_f[:, :, None]

        steel = float(rng.uniform(138, 178))
        tint = np.array([rng.uniform(0, 8), rng.uniform(-2, 3), rng.uniform(-6, 0)], np.float32)
        brushed = cv2.blur(rng.standard_normal((h, w)).astype(np.float32), (61, 1)) * 30.0
        sheen_angle = rng.uniform(0, np.pi)
        d = (xx - cx) * np.cos(sheen_angle) + (yy - cy) * np.sin(sheen_angle)
        sheen = 16.0 * np.exp(-0.5 * (d / (0.25 * pw)) ** 2) - 6.0
        metal = steel + brushed + 2.5 * fine + sheen + 4.0 * coarse
        # Frame band with a bevel: lit on the lamp side, dark groove on the inside.
        band = int(round(rng.uniform(9, 14) * s))
        inner = np.zeros((h, w), np.uint8)
        cv2.fillPoly(inner, [_fixed(_rounded_rect_pts(x0 + band, y0 + band, x1 - band, y1 - band, max(2.0, corner - band)))],
                     255, _AA, 4)
        inner_f = inner.astype(np.float32) / 255.0
        frame_f = plate_f - inner_f
        metal = metal - 14.0 * frame_f
        groove = cv2.GaussianBlur(inner_f, (0, 0), 1.0)
        metal = metal - 40.0 * np.clip((groove - inner_f) * 3.0 + (inner_f - groove) * 3.0, 0, 1)
        edge = cv2.GaussianBlur(plate_f, (0, 0), 1.2)
        gy, gx = np.gradient(edge)
        metal = metal + 60.0 * (gx + gy) * plate_f  # top/left rim catches the light
        scratches = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(10, 30))):
            p0 = np.array([rng.uniform(x0, x1), rng.uniform(y0, y1)])
            ang = rng.uniform(0, np.pi)
            length = rng.uniform(15, 110) * s
            p1 = p0 + length * np.array([np.cos(ang), np.sin(ang)])
            cv2.line(scratches, tuple(int(v) for v in p0), tuple(int(v) for v in p1), float(rng.uniform(-14, 12)), 1)
        metal = metal + scratches * inner_f
        plate_rgb = metal[:, :, None] + tint[None, None, :]
        # Embossed rating plate text in the frame band.
        text = np.zeros((h, w), np.uint8)
        tscale = 0.33 * s
        cv2.putText(text, "MAX 15 kg  e=5 g", (x0 + band + int(8 * s), y1 - max(2, band // 2 - 3)),
                    cv2.FONT_HERSHEY_SIMPLEX, tscale, 255, 1, _AA)
        plate_rgb = plate_rgb - 28.0 * (text.astype(np.float32) / 255.0)[:, :, None]
        canvas = canvas * (1 - plate_f[:, :, None]) + plate_rgb * plate_f[:, :, None]
        # Scanner window, on some installations.
        if rng.random() < 0.5:
            sw, sh = pw * rng.uniform(0.28, 0.4), ph * rng.uniform(0.09, 0.13)
            side = int(rng.integers(2))
            sx = cx - sw / 2 + rng.uniform(-0.2, 0.2) * pw
            sy = (y0 + band + 10 * s) if side == 0 else (y1 - band - 10 * s - sh)
            win = np.zeros((h, w), np.uint8)
            cv2.fillPoly(win, [_fixed(_rounded_rect_pts(sx, sy, sx + sw, sy + sh, 4 * s))], 255, _AA, 4)
            win_f = win.astype(np.float32) / 255.0
            glass = np.array([52, 44, 38], np.float32)[None, None, :] + (8.0 * mid + 10.0 * (xx - sx) / sw)[:, :, None]
            canvas = canvas * (1 - win_f[:, :, None]) + glass * win_f[:, :, None]
            ring = np.clip(cv2.GaussianBlur(win_f, (0, 0), 1.0) - win_f, 0, 1) + np.clip(win_f - cv2.erode(win_f, np.ones((3, 3))), 0, 1)
            canvas = canvas - 35.0 * ring[:, :, None]
        return canvas.astype(np.float32), (x0 + band, y0 + band, x1 - band, y1 - band)

    # ------------------------------------------------------------------- light

    def _draw_light(self) -> _Light:
        rng, lj = self._rng, self.light_jitter
        h, w = self.height, self.width
        gain = 1.0 + lj * rng.uniform(-0.8, 0.8)
        contrast = 1.0 + lj * rng.uniform(-0.6, 0.6)
        temp = lj * rng.uniform(-1, 1)
        green = lj * rng.uniform(-0.1, 0.1)  # fluorescent tubes lean green
        channel = np.array([1.0 - 0.25 * temp, 1.0 + green, 1.0 + 0.25 * temp], np.float32)
        gx, gy = rng.uniform(-1, 1, 2) * lj * 0.5
        vignette = lj * rng.uniform(0.0, 0.8)
        # The field is smooth: build it at 1/8 resolution and interpolate.
        lw, lh = w // 8 + 1, h // 8 + 1
        fx = ((np.arange(lw, dtype=np.float32) + 0.5) / lw - 0.5)[None, :]
        fy = ((np.arange(lh, dtype=np.float32) + 0.5) / lh - 0.5)[:, None]
        field = 1.0 + np.float32(gx) * fx + np.float32(gy) * fy - np.float32(vignette) * (fx * fx + fy * fy)
        field = (np.float32(gain) * field)[:, :, None] * channel[None, None, :]
        # out = (canvas - pivot) * contrast + pivot, times the field: folded into scale and offset.
        scale = cv2.resize(field * np.float32(contrast), (w, h), interpolation=cv2.INTER_LINEAR)
        offset = cv2.resize(field * np.float32(self._pivot * (1.0 - contrast)), (w, h), interpolation=cv2.INTER_LINEAR)
        ang = rng.uniform(0, 2 * np.pi)
        return _Light(
            scale=scale,
            offset=offset,
            direction=(float(np.cos(ang)), float(np.sin(ang))),
            elevation=float(np.deg2rad(rng.uniform(40, 72))),
            shadow=float(rng.uniform(0.25, 0.5)),
            shadow_len=float(rng.uniform(0.06, 0.2)),
        )

    # ------------------------------------------------------------------- items

    def _place(self, product: Product, placed: list[_Item], strict: bool) -> _Item | None:
        """Paint, rotate and position one product: box inside the frame, clear of the others.

        Clear means IoU < 0.1 and at most 20% of the smaller box covered. When that cannot
        be had, a ``strict`` call gives up (None); otherwise the least crowded try is kept,
        so requested products are always drawn.
        """
        rng = self._rng
        sc = self._scale
        min_side = _MIN_BOX_SIDE * sc
        px0, py0, px1, py1 = self._platter
        best: _Item | None = None
        best_clash = np.inf
        for attempt in range(30):
            shrink = 1.0 if attempt < 15 else 0.85
            s = sc * float(rng.uniform(*_PX_PER_MM)) * shrink
            s = max(s, min_side * 1.05 / min(product.size_mm))
            angle = float(rng.uniform(0, 2 * np.pi))
            w, h = product.size_mm[0] * s, product.size_mm[1] * s
            ca, sa = abs(np.cos(angle)), abs(np.sin(angle))
            ex, ey = (ca * w + sa * h) / 2, (sa * w + ca * h) / 2
            m = _BOX_MARGIN
            cx = float(rng.uniform(px0, px1))
            cy = float(rng.uniform(py0, py1))
            cx = float(np.clip(cx, m + ex, self.width - m - ex)) if 2 * (m + ex) < self.width else self.width / 2
            cy = float(np.clip(cy, m + ey, self.height - m - ey)) if 2 * (m + ey) < self.height else self.height / 2
            est = (cx - ex, cy - ey, cx + ex, cy + ey)
            if any(_clash(est, it.box) >= 1.0 for it in placed) and attempt < 29:
                continue
            item = self._make_item(product, s, angle, cx, cy)
            if item is None:
                continue
            worst = max((_clash(item.box, it.box) for it in placed), default=0.0)
            if worst < 1.0:
                return item
            if worst < best_clash:
                best, best_clash = item, worst
        if best is None:  # pragma: no cover - only on absurd frame sizes
            raise RuntimeError(f"cannot place {product.sku} in a {self.width}x{self.height} frame")
        return None if strict else best

    def _make_item(self, product: Product, s: float, angle: float, cx: float, cy: float) -> _Item | None:
        rng = self._rng
        min_side = _MIN_BOX_SIDE * self._scale
        light = self._light
        ca, sa = np.cos(angle), np.sin(angle)
        to_local = np.array([[ca, sa], [-sa, ca]])
        parallax = to_local @ np.array([cx - self.width / 2, cy - self.height / 2])
        lamp = to_local @ np.array(light.direction)
        for _ in range(3):
            w, h = product.size_mm[0] * s, product.size_mm[1] * s
            sprite = _Sprite(rng, self._tex, w, h, s, lamp, light.elevation, parallax, _HEIGHT_MM[product.shape])
            _PAINTERS[product.shape](sprite, product)
            premul, alpha = _rotate(sprite.col * sprite.a[:, :, None], sprite.a, angle)
            if rng.random() < _MOTION_BLUR_RATE:
                premul, alpha = _motion_blur(rng, premul, alpha, self._scale)
            box = _tight_box(alpha > _VISIBLE_ALPHA)
            if box is None:
                return None
            bw, bh = box[2] - box[0], box[3] - box[1]
            if min(bw, bh) >= min_side:
                break
            s *= min_side * 1.06 / min(bw, bh)
        else:
            return None
        rh, rw = alpha.shape
        ox, oy = int(round(cx - rw / 2)), int(round(cy - rh / 2))
        # Keep the whole box inside the frame.
        m = _BOX_MARGIN
        ox += max(0, m - (ox + box[0])) - max(0, ox + box[2] - (self.width - m))
        oy += max(0, m - (oy + box[1])) - max(0, oy + box[3] - (self.height - m))
        frame_box = (ox + box[0], oy + box[1], ox + box[2], oy + box[3])
        if frame_box[0] < 0 or frame_box[1] < 0 or frame_box[2] > self.width or frame_box[3] > self.height:
            return None
        return _Item(product, premul, alpha, ox, oy, frame_box, _HEIGHT_MM[product.shape] * s)

    def _cast_shadow(self, canvas: np.ndarray, alpha: np.ndarray, ox: int, oy: int, height_px: float,
                     contact: bool) -> None:
        light = self._light
        length = min(height_px * light.shadow_len / np.tan(light.elevation) * 1.6, 30.0 * self._scale)
        if not contact:
            length = max(length, 18.0 * self._scale)
        dx, dy = -light.direction[0] * length, -light.direction[1] * length
        sigma = 2.0 + 0.35 * length
        pad = int(np.ceil(max(abs(dx), abs(dy)) + 3 * sigma)) + 2
        ah, aw = alpha.shape
        bw, bh = aw + 2 * pad, ah + 2 * pad
        # Soft shadows: work at half resolution.
        big = cv2.copyMakeBorder(alpha, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        small = cv2.resize(big, ((bw + 1) // 2, (bh + 1) // 2), interpolation=cv2.INTER_AREA)
        shifted = cv2.warpAffine(small, np.float32([[1, 0, dx / 2], [0, 1, dy / 2]]), small.shape[::-1])
        shadow = cv2.GaussianBlur(shifted, (0, 0), sigma / 2) * np.float32(light.shadow)
        if contact:  # ambient occlusion right under the product
            shadow = np.maximum(shadow, cv2.GaussianBlur(small, (0, 0), 1.25 * self._scale) * np.float32(0.45))
        shadow = cv2.resize(shadow, (bw, bh), interpolation=cv2.INTER_LINEAR)
        fs, ls = _clip_slices(ox - pad, oy - pad, bw, bh, self.width, self.height)
        if fs is None:
            return
        canvas[fs] *= (1.0 - shadow[ls])[:, :, None]

    # -------------------------------------------------------------------- hand

    def _hand(self, items: list[_Item]):
        """A shopper's hand reaching in from an edge over one item, covering <= 25% of any item."""
        rng, sc = self._rng, self._scale
        target = items[int(rng.integers(len(items)))]
        tx = (target.box[0] + target.box[2]) / 2 + rng.uniform(-0.2, 0.2) * (target.box[2] - target.box[0])
        ty = (target.box[1] + target.box[3]) / 2 + rng.uniform(-0.2, 0.2) * (target.box[3] - target.box[1])
        edge = int(rng.choice(4, p=(0.4, 0.2, 0.2, 0.2)))  # bottom, left, right, top
        spread = rng.uniform(-0.6, 0.6)
        if edge == 0:
            entry = np.array([tx + spread * (self.height - ty), self.height + 20 * sc])
        elif edge == 1:
            entry = np.array([-20 * sc, ty + spread * tx])
        elif edge == 2:
            entry = np.array([self.width + 20 * sc, ty + spread * (self.width - tx)])
        else:
            entry = np.array([tx + spread * ty, -20 * sc])
        direction = np.array([tx, ty]) - entry
        dist = float(np.linalg.norm(direction))
        direction /= dist
        geom = _HandGeometry(rng, sc)
        want = float(rng.uniform(*_HAND_COVER))

        def cover(reach: float, item: _Item) -> float:
            m = geom.mask(entry, direction, reach, item.ox, item.oy, item.alpha.shape)
            a = item.alpha
            return float((m * a).sum() / max(float(a.sum()), 1e-6))

        bw, bh = target.box[2] - target.box[0], target.box[3] - target.box[1]
        lo, hi = dist - 0.75 * max(bw, bh), dist + 0.75 * max(bw, bh)
        for _ in range(8):
            mid = (lo + hi) / 2
            if cover(mid, target) < want:
                lo = mid
            else:
                hi = mid
        reach = lo
        if cover(reach, target) < 0.02:
            return None
        if any(cover(reach, it) > _MAX_HAND_COVER for it in items):
            return None
        premul, alpha, ox, oy = geom.render(entry, direction, reach, self.width, self.height, self._tex,
                                            np.array(self._light.direction))
        # Every item keeps a box of at least the minimum size.
        cover_map = np.zeros((self.height, self.width), np.float32)
        _paste_max(cover_map, alpha, ox, oy)
        min_side = _MIN_BOX_SIDE * self._scale
        for box in _visible_boxes(items, cover_map):
            if min(box[2] - box[0], box[3] - box[1]) < min_side:
                return None
        return premul, alpha, ox, oy

    # ------------------------------------------------------------------ camera

    def _camera(self, canvas: np.ndarray) -> np.ndarray:
        rng, light = self._rng, self._light
        img = canvas
        img *= light.scale
        img += light.offset
        if rng.random() < _DEFOCUS_RATE:
            img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.6, 1.3)) * self._scale)
        sigma = self.noise_sigma * float(rng.uniform(0.6, 1.2))
        if sigma > 0:
            x0, y0 = int(rng.integers(25)), int(rng.integers(25))
            noise = self._noise[y0 : y0 + self.height, x0 : x0 + self.width]
            if rng.random() < 0.5:
                noise = noise[::-1, ::-1]
            img += noise * np.float32(sigma)
        return np.clip(img, 0, 255).astype(np.uint8)


# =============================================================== sprite painting


class _Sprite:
    """One product painted top-down in its own frame: long axis along x, centred.

    ``col`` is BGR float32, ``a`` its coverage. Painters draw with the mask helpers and
    ``put``; ``dome`` shades a region as a curved surface lit by the lamp.
    """

    def __init__(self, rng, tex, w, h, s, lamp, elevation, parallax, height_mm):
        self.rng = rng
        self._tex = tex
        self.w, self.h, self.s = float(w), float(h), float(s)
        self.light = np.asarray(lamp, np.float64)
        self.elev = float(elevation)
        self._parallax = np.asarray(parallax, np.float64)
        top = self.shift(height_mm)
        self.W = int(np.ceil(w + 2 * (5 + abs(top[0]))))
        self.H = int(np.ceil(h + 2 * (5 + abs(top[1]))))
        self.c = np.array([self.W / 2, self.H / 2])
        self.col = np.zeros((self.H, self.W, 3), np.float32)
        self.a = np.zeros((self.H, self.W), np.float32)

    # geometry
    def parallax(self, z_mm: float) -> float:
        return min(_MAX_PARALLAX, z_mm / (_CAMERA_HEIGHT_MM - z_mm))

    def shift(self, z_mm: float) -> np.ndarray:
        """Where the product's top at height z appears relative to its base (local px)."""
        return self._parallax * self.parallax(z_mm)

    def grid(self, c) -> tuple[np.ndarray, np.ndarray]:
        dx = (np.arange(self.W, dtype=np.float32) + 0.5 - np.float32(c[0]))[None, :]
        dy = (np.arange(self.H, dtype=np.float32) + 0.5 - np.float32(c[1]))[:, None]
        return dx, dy

    def polar(self, c) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        dx, dy = self.grid(c)
        return dx, dy, np.sqrt(dx * dx + dy * dy), np.arctan2(dy, dx)

    def tex(self, kind: str) -> np.ndarray:
        bank = self._tex[kind]
        bh, bw = bank.shape
        if self.H > bh or self.W > bw:
            bank = np.tile(bank, (self.H // bh + 1, self.W // bw + 1))
            bh, bw = bank.shape
        y0 = int(self.rng.integers(bh - self.H + 1))
        x0 = int(self.rng.integers(bw - self.W + 1))
        t = bank[y0 : y0 + self.H, x0 : x0 + self.W]
        return t[::-1] if self.rng.random() < 0.5 else t

    # masks
    def _layer(self) -> np.ndarray:
        return np.zeros((self.H, self.W), np.uint8)

    @staticmethod
    def _done(layer: np.ndarray) -> np.ndarray:
        return layer.astype(np.float32) * np.float32(1 / 255)

    def circle(self, c, r) -> np.ndarray:
        m = self._layer()
        cv2.circle(m, (_fx(c[0]), _fx(c[1])), max(1, _fx(r)), 255, -1, _AA, 4)
        return self._done(m)

    def ring(self, c, r, thickness) -> np.ndarray:
        m = self._layer()
        cv2.circle(m, (_fx(c[0]), _fx(c[1])), max(1, _fx(r)), 255, max(1, int(round(thickness))), _AA, 4)
        return self._done(m)

    def ellipse(self, c, axes, angle_deg: float = 0.0, thickness: int = -1) -> np.ndarray:
        m = self._layer()
        cv2.ellipse(m, (_fx(c[0]), _fx(c[1])), (max(1, _fx(axes[0])), max(1, _fx(axes[1]))), float(angle_deg),
                    0, 360, 255, thickness, _AA, 4)
        return self._done(m)

    def poly(self, pts) -> np.ndarray:
        m = self._layer()
        cv2.fillPoly(m, [_fixed(pts)], 255, _AA, 4)
        return self._done(m)

    def lines(self, pts, thickness: float, closed: bool = False) -> np.ndarray:
        m = self._layer()
        cv2.polylines(m, [_fixed(pts)], closed, 255, max(1, int(round(thickness))), _AA, 4)
        return self._done(m)

    def text(self, text: str, centre, max_w: float, max_h: float, bold: bool = True) -> np.ndarray:
        m = self._layer()
        font = cv2.FONT_HERSHEY_DUPLEX if bold else cv2.FONT_HERSHEY_SIMPLEX
        (tw, th), _ = cv2.getTextSize(text, font, 1.0, 2)
        scale = min(max_w / tw, max_h / th)
        thick = max(1, int(round(scale * (2.2 if bold else 1.4))))
        (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
        org = (int(round(centre[0] - tw / 2)), int(round(centre[1] + th / 2)))
        cv2.putText(m, text, org, font, scale, 255, thick, _AA)
        return self._done(m)

    # paint
    @staticmethod
    def _extent(m: np.ndarray, pad: int = 0):
        """Slices of the bounding box of ``m > 0`` grown by ``pad``; None if ``m`` is empty."""
        x, y, w, h = cv2.boundingRect(cv2.compare(m, 0.002, cv2.CMP_GT))
        if w == 0 or h == 0:
            return None
        y0, x0 = max(0, y - pad), max(0, x - pad)
        return slice(y0, min(m.shape[0], y + h + pad)), slice(x0, min(m.shape[1], x + w + pad))

    def put(self, m: np.ndarray, colour, opacity: float = 1.0) -> None:
        """Paint ``colour`` (BGR or an HxWx3 array) over the sprite with coverage ``m``."""
        sl = self._extent(m)
        if sl is None:
            return
        mm = m[sl]
        if opacity != 1.0:
            mm = mm * np.float32(opacity)
        colour = np.asarray(colour, np.float32)
        if colour.ndim == 3:
            colour = colour[sl]
        col = self.col[sl]
        col += (colour - col) * mm[:, :, None]
        a = self.a[sl]
        a += (1.0 - a) * mm

    def tint(self, m: np.ndarray, factor) -> None:
        """Multiply the colour by ``factor`` (array or scalar) where ``m`` is set."""
        sl = self._extent(m)
        if sl is None:
            return
        factor = np.asarray(factor, np.float32)
        if factor.ndim == 2:
            factor = np.broadcast_to(factor, m.shape)[sl]
        f = 1.0 + (factor - 1.0) * m[sl]
        self.col[sl] *= f[:, :, None]

    def dome(self, m: np.ndarray, sigma: float, strength: float = 1.0, ambient: float = 0.35,
             gloss: float = 0.0, shininess: float = 20.0, relief: float = 3.0) -> None:
        """Shade region ``m`` as a surface whose height is ``m`` blurred by ``sigma``."""
        sl = self._extent(m, 1)
        if sl is None:
            return
        m = m[sl]
        hgt = cv2.GaussianBlur(m, (0, 0), max(0.5, sigma), borderType=cv2.BORDER_CONSTANT)
        gy, gx = np.gradient(hgt)
        k = np.float32(relief * sigma)
        nx, ny = -gx * k, -gy * k
        inv = 1.0 / np.sqrt(nx * nx + ny * ny + 1.0)
        ce, se = np.cos(self.elev), np.sin(self.elev)
        lx, ly = self.light[0] * ce, self.light[1] * ce
        lam = (nx * np.float32(lx) + ny * np.float32(ly) + np.float32(se)) * inv
        diffuse = ambient + (1.0 - ambient) * np.clip(lam, 0, None) / np.float32(se)
        col = self.col[sl]
        col *= (1.0 + (diffuse - 1.0) * np.float32(strength) * m)[:, :, None]
        if gloss > 0:
            hx, hy, hz = lx, ly, se + 1.0
            hn = np.sqrt(hx * hx + hy * hy + hz * hz)
            ndh = (nx * np.float32(hx / hn) + ny * np.float32(hy / hn) + np.float32(hz / hn)) * inv
            spec = np.clip(ndh, 0, 1) ** np.float32(shininess) * np.float32(gloss) * m
            col += (np.float32(255.0) - col) * spec[:, :, None]

    def walls(self, pts: np.ndarray, z_mm: float, colour) -> np.ndarray:
        """Side walls of a prism with base polygon ``pts``; returns the top face polygon."""
        d = self.shift(z_mm)
        top = pts + d
        if np.hypot(*d) >= 0.6:
            hull = cv2.convexHull(np.vstack([pts, top]).astype(np.float32))[:, 0, :]
            m = self.poly(hull)
            # Wall brightness: walls facing the lamp are lighter.
            facing = float(np.dot(-d / np.hypot(*d), self.light))
            self.put(m, np.asarray(colour, np.float32) * np.float32(0.62 + 0.12 * facing))
        return top


def _fx(v: float) -> int:
    return int(round(float(v) * 16))


def _fixed(pts) -> np.ndarray:
    return np.round(np.asarray(pts, np.float64) * 16).astype(np.int32)


def _cols(p: Product) -> list[np.ndarray]:
    return [np.array(c, np.float32) for c in p.colors]


def _outline(c, rx, ry, rng, amps, n: int = 96) -> np.ndarray:
    """A closed, gently irregular ellipse: radius modulated by sin(k*t + random phase)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.ones_like(t)
    for k, a in amps:
        r = r + a * rng.uniform(0.6, 1.2) * np.sin(k * t + rng.uniform(0, 2 * np.pi))
    return np.stack([c[0] + rx * r * np.cos(t), c[1] + ry * r * np.sin(t)], axis=1)


def _rounded_rect_pts(x0, y0, x1, y1, r, n: int = 8) -> np.ndarray:
    r = max(0.0, min(r, (x1 - x0) / 2, (y1 - y0) / 2))
    pts = []
    for cx, cy, start in ((x1 - r, y1 - r, 0), (x0 + r, y1 - r, 90), (x0 + r, y0 + r, 180), (x1 - r, y0 + r, 270)):
        for a in np.deg2rad(np.linspace(start, start + 90, n)):
            pts.append((cx + r * np.cos(a), cy + r * np.sin(a)))
    return np.array(pts)


def _star(c, r_out, r_in, n, rot, rng=None, jitter: float = 0.0) -> np.ndarray:
    pts = []
    for i in range(2 * n):
        a = rot + i * np.pi / n
        r = r_out if i % 2 == 0 else r_in
        if rng is not None and i % 2 == 0:
            r *= 1 + rng.uniform(-jitter, jitter)
        pts.append((c[0] + r * np.cos(a), c[1] + r * np.sin(a)))
    return np.array(pts)


def _text_colour(body: np.ndarray, band: np.ndarray) -> np.ndarray:
    lum = lambda c: 0.114 * c[0] + 0.587 * c[1] + 0.299 * c[2]  # noqa: E731
    if abs(lum(band) - lum(body)) > 60:
        return band
    return np.array((25, 25, 25) if lum(body) > 128 else (245, 245, 245), np.float32)


# ---------------------------------------------------------------------- produce


def _paint_banana(sp: _Sprite, p: Product) -> None:
    peel, dark, tips, stem = _cols(p)
    rng, c, w, h = sp.rng, sp.c, sp.w, sp.h
    t_max = 0.5 * h
    bend = h - 0.62 * t_max
    flip = 1 if rng.random() < 0.5 else -1
    u = np.linspace(-1, 1, 49)
    xs = c[0] + u * w * 0.45
    yc = c[1] + flip * (-h / 2 + t_max / 2 + bend * u * u)
    thick = t_max * np.clip(1 - np.abs(u) ** 3, 0.18, 1) ** 0.55
    top = np.stack([xs, yc - thick / 2], 1)
    bot = np.stack([xs, yc + thick / 2], 1)
    m = sp.poly(np.vstack([top, bot[::-1]]))
    dx, _ = sp.grid(c)
    ends = np.clip((np.abs(dx) / np.float32(w * 0.45) - 0.75) * 3.0, 0, 1)
    colour = peel[None, None, :] + (dark - peel)[None, None, :] * (0.25 + 0.2 * sp.tex("coarse"))[:, :, None] * 0.6
    colour = colour + (stem - colour) * (ends * 0.45)[:, :, None]
    sp.put(m, colour)
    # Facet ridges along the fruit.
    for off in (-0.22, 0.2):
        ridge = np.stack([xs[4:-4], yc[4:-4] + off * thick[4:-4]], 1)
        sp.put(sp.lines(ridge, max(1.0, 0.05 * t_max)) * m, dark, 0.45)
    # Sugar spots.
    for _ in range(int(rng.integers(0, 14))):
        i = int(rng.integers(6, 43))
        pc = (xs[i], yc[i] + rng.uniform(-0.35, 0.35) * thick[i])
        sp.put(sp.circle(pc, rng.uniform(0.6, 1.6) * sp.s) * m, tips, 0.6)
    # Stem at one end, dark flower tip at the other.
    dirv = np.array([xs[-1] - xs[-4], yc[-1] - yc[-4]])
    dirv /= np.linalg.norm(dirv)
    s0 = np.array([xs[-3], yc[-3]])
    s1 = s0 + dirv * 0.1 * w
    sp.put(sp.lines([s0, s1], max(2.0, 0.22 * t_max)), stem * 0.9)
    sp.put(sp.circle(s1, max(1.2, 0.1 * t_max)), tips)
    sp.put(sp.ellipse((xs[1], yc[1]), (0.08 * t_max + 1, 0.12 * t_max + 1)), tips)
    sp.dome(m, 0.3 * t_max, gloss=0.15, shininess=12)


def _paint_apple(sp: _Sprite, p: Product) -> None:
    skin, dark, streak, stalk = _cols(p)
    rng, c = sp.rng, sp.c
    rx, ry = sp.w / 2 / 1.05, sp.h / 2 / 1.05
    R = min(rx, ry)
    m = sp.poly(_outline(c, rx, ry, rng, ((2, 0.02), (3, 0.018), (5, 0.012))))
    cc = c + rng.uniform(-0.12, 0.12, 2) * R
    dx, dy, r, th = sp.polar(cc)
    r = r / np.float32(R)
    coarse = sp.tex("coarse")
    # Blush: the second colour on one side of the fruit, broken up by mottling.
    side = rng.uniform(0, 2 * np.pi)
    towards = (dx * np.float32(np.cos(side)) + dy * np.float32(np.sin(side))) / np.float32(R)
    blush = np.clip(0.25 + 0.45 * towards + 0.3 * coarse, 0, 0.75)
    colour = skin[None, None, :] + (streak - skin)[None, None, :] * blush[:, :, None]
    # Fine streaks radiating from the stalk, in the dark shade.
    n = float(rng.integers(28, 44))
    streaks = (0.5 + 0.5 * np.sin(th * np.float32(n) + 3.0 * coarse)) ** 6 * np.clip(r * 1.3, 0, 1) * np.float32(0.45)
    colour = colour + (dark - colour) * (streaks + 0.25 * np.clip(-coarse, 0, 1))[:, :, None]
    sp.put(m, colour)
    sp.tint(m, 1.0 + 0.04 * sp.tex("fine"))
    sp.tint(m, 1.0 - 0.5 * np.exp(-(r / np.float32(0.22)) ** 2))  # stalk cavity
    ang = rng.uniform(0, 2 * np.pi)
    tip = cc + np.array([np.cos(ang), np.sin(ang)]) * 0.32 * R
    sp.put(sp.lines([cc, tip], max(2.0, 0.08 * R)), stalk)
    sp.put(sp.circle(tip, max(1.0, 0.05 * R)), stalk * 0.7)
    sp.dome(m, 0.45 * R, gloss=0.35, shininess=22)


def _paint_citrus(sp: _Sprite, p: Product) -> None:
    peel, dark, light, navel = _cols(p)
    rng, c = sp.rng, sp.c
    rx, ry = sp.w / 2 / 1.03, sp.h / 2 / 1.03
    R = min(rx, ry)
    m = sp.poly(_outline(c, rx, ry, rng, ((2, 0.015), (3, 0.01))))
    colour = peel[None, None, :] + (dark - peel)[None, None, :] * np.clip(0.12 + 0.12 * sp.tex("coarse"), 0, 1)[:, :, None]
    sp.put(m, colour)
    sp.tint(m, 1.0 + 0.06 * sp.tex("mid") + 0.06 * sp.tex("fine"))  # dimpled peel
    pc = c + rng.uniform(-0.25, 0.25, 2) * R
    sp.put(sp.circle(pc, 0.1 * R), dark, 0.8)
    sp.put(sp.circle(pc, 0.045 * R + 0.5), navel)
    sp.dome(m, 0.45 * R, gloss=0.28, shininess=10)
    sp.put(sp.circle(c + sp.light * 0.4 * R, 0.12 * R) * m, light, 0.25)


def _paint_lemon(sp: _Sprite, p: Product) -> None:
    peel, dark, light, tips = _cols(p)
    rng, c = sp.rng, sp.c
    rx, ry = sp.w / 2 / 1.14, sp.h / 2 / 1.02
    t = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    r = 1 + 0.015 * np.sin(3 * t + rng.uniform(0, 6))
    nub = 0.16 * (np.exp(-((t - 0) / 0.16) ** 2) + np.exp(-((t - 2 * np.pi) / 0.16) ** 2) + np.exp(-((t - np.pi) / 0.2) ** 2) * 0.8)
    pts = np.stack([c[0] + rx * (r + nub) * np.cos(t), c[1] + ry * r * np.sin(t)], 1)
    m = sp.poly(pts)
    dx, dy = sp.grid(c)
    ends = np.clip((np.abs(dx) / np.float32(rx) - 0.85) * 4.0, 0, 1) * np.exp(-(dy / np.float32(0.35 * ry)) ** 2)
    colour = peel[None, None, :] + (dark - peel)[None, None, :] * np.clip(0.1 + 0.12 * sp.tex("coarse"), 0, 1)[:, :, None]
    colour = colour + (tips - colour) * (ends * 0.6)[:, :, None]
    sp.put(m, colour)
    sp.tint(m, 1.0 + 0.05 * sp.tex("mid") + 0.05 * sp.tex("fine"))
    sp.dome(m, 0.42 * min(rx, ry), gloss=0.3, shininess=12)
    sp.put(sp.ellipse(c + sp.light * 0.35 * ry, (0.25 * rx, 0.1 * ry)) * m, light, 0.25)


def _paint_tomato(sp: _Sprite, p: Product) -> None:
    skin, dark, light, calyx = _cols(p)
    rng, c = sp.rng, sp.c
    rx, ry = sp.w / 2 / 1.04, sp.h / 2 / 1.04
    R = min(rx, ry)
    m = sp.poly(_outline(c, rx, ry, rng, ((5, 0.025), (2, 0.015))))
    colour = skin[None, None, :] + (dark - skin)[None, None, :] * np.clip(0.2 + 0.3 * sp.tex("coarse"), 0, 1)[:, :, None]
    sp.put(m, colour)
    cc = c + rng.uniform(-0.1, 0.1, 2) * R
    sp.dome(m, 0.4 * R, gloss=0.75, shininess=45)
    lamp_deg = np.rad2deg(np.arctan2(sp.light[1], sp.light[0]))
    sp.put(sp.ellipse(c + sp.light * 0.5 * R, (0.16 * R, 0.07 * R), lamp_deg + 90) * m, light, 0.35)
    n = int(rng.integers(5, 7))
    star = _star(cc, 0.42 * R, 0.1 * R, n, rng.uniform(0, 2 * np.pi), rng, 0.2)
    sm = sp.poly(star)
    sp.put(sm, calyx)
    sp.put(sp.lines(star, max(1.0, 0.035 * R), closed=True), calyx * 0.55, 0.8)
    sp.put(sp.circle(cc, 0.09 * R), calyx * 0.8)
    sp.put(sp.circle(cc, 0.045 * R + 0.4), calyx * 0.5)


def _paint_cucumber(sp: _Sprite, p: Product) -> None:
    skin, dark, stripe = _cols(p)
    rng, c, w, h = sp.rng, sp.c, sp.w, sp.h
    u = np.linspace(-1, 1, 41)
    bend = rng.uniform(-0.12, 0.12) * h
    xs = c[0] + u * (w / 2 - h / 2)
    yc = c[1] + bend * (u * u - 0.5)
    rad = h / 2 - abs(bend) / 2
    m = sp.lines(np.stack([xs, yc], 1), 2 * rad)
    m = np.maximum(m, sp.circle((xs[0], yc[0]), rad))
    m = np.maximum(m, sp.circle((xs[-1], yc[-1]), rad * 0.96))
    dx, dy = sp.grid(c)
    coarse = sp.tex("coarse")
    bands = np.clip(np.sin(dy * np.float32(2 * np.pi / (0.35 * h)) + 1.5 * coarse + dx * np.float32(0.01)), 0, 1) ** 2
    colour = skin[None, None, :] + (stripe - skin)[None, None, :] * (0.55 * bands)[:, :, None]
    colour = colour + (dark - colour) * np.clip(0.3 * coarse, 0, 0.5)[:, :, None]
    sp.put(m, colour)
    warts = np.clip((sp.tex("fine") - 1.8) * 2.0, 0, 1)
    sp.put(m * warts, stripe * 1.15, 0.6)
    sp.put(sp.circle((xs[0] - 0.8 * rad, yc[0]), 0.16 * rad + 0.5), (40, 110, 150), 0.9)
    sp.put(sp.circle((xs[-1] + 0.85 * rad, yc[-1]), 0.2 * rad + 0.5), dark * 0.7)
    sp.dome(m, 0.3 * h, gloss=0.3, shininess=18)


def _paint_broccoli(sp: _Sprite, p: Product) -> None:
    floret, dark, stem = _cols(p)
    rng, c, w, h = sp.rng, sp.c, sp.w, sp.h
    crown = c + np.array([-0.18 * w, rng.uniform(-0.05, 0.05) * h])
    # Stem and side branches.
    tail = c + np.array([0.47 * w, rng.uniform(-0.08, 0.08) * h])
    stem_pts = np.array([crown + (0, -0.14 * h), tail + (0, -0.09 * h), tail + (0, 0.09 * h), crown + (0, 0.14 * h)])
    sm = sp.poly(stem_pts)
    sp.put(sm, stem)
    sp.put(sp.circle(tail, 0.085 * h), stem * 1.08)  # cut end
    sp.put(sp.ring(tail, 0.085 * h, 1), stem * 0.7, 0.6)
    sp.dome(sm, 0.06 * h, strength=0.8)
    # Florets: a cluster of bumpy heads.
    cm = np.zeros((sp.H, sp.W), np.float32)
    heads = [(crown, 0.3 * h)]
    for _ in range(int(rng.integers(7, 11))):
        ang = rng.uniform(0, 2 * np.pi)
        dist = rng.uniform(0.15, 0.3) * h
        heads.append((crown + dist * np.array([np.cos(ang) * 1.15, np.sin(ang)]), rng.uniform(0.15, 0.23) * h))
    tex = sp.tex("fine")
    for hc, hr in heads:
        hm = sp.circle(hc, hr)
        sp.put(hm, floret)
        sp.put(sp.ring(hc, hr, max(1.0, 0.02 * h)), dark, 0.7)
        cm = np.maximum(cm, hm)
    buds = np.clip(0.5 + 0.5 * tex, 0, 1)
    sp.tint(cm, 1.0 - 0.35 * buds)
    sp.dome(cm, 0.07 * h, gloss=0.1, shininess=8)


def _paint_potato(sp: _Sprite, p: Product) -> None:
    skin, dark, eyes = _cols(p)
    rng, c = sp.rng, sp.c
    rx, ry = sp.w / 2 / 1.08, sp.h / 2 / 1.08
    R = min(rx, ry)
    m = sp.poly(_outline(c, rx, ry, rng, ((2, 0.04), (3, 0.035), (4, 0.02))))
    coarse = sp.tex("coarse")
    colour = skin[None, None, :] + (dark - skin)[None, None, :] * np.clip(0.2 + 0.5 * coarse, 0, 1)[:, :, None]
    sp.put(m, colour)
    sp.tint(m, 1.0 + 0.1 * sp.tex("mid") + 0.06 * sp.tex("fine"))
    for _ in range(int(rng.integers(3, 7))):
        ec = c + np.array([rng.uniform(-0.7, 0.7) * rx, rng.uniform(-0.6, 0.6) * ry])
        er = rng.uniform(0.05, 0.08) * R
        sp.put(sp.ellipse(ec, (er * 1.6, er), rng.uniform(0, 180)) * m, eyes, 0.85)
    sp.dome(m, 0.4 * R, strength=0.9)


def _paint_pepper(sp: _Sprite, p: Product) -> None:
    skin, dark, stem = _cols(p)
    rng, c = sp.rng, sp.c
    R = min(sp.w, sp.h) / 2 / 1.09
    phase = rng.uniform(0, 2 * np.pi)
    t = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    r = 1 + 0.08 * np.cos(4 * (t - phase)) + 0.02 * np.sin(3 * t + rng.uniform(0, 6))
    m = sp.poly(np.stack([c[0] + R * r * np.cos(t), c[1] + R * r * np.sin(t)], 1))
    sp.put(m, skin)
    for k in range(4):  # creases between the lobes
        a = phase + np.pi / 4 + k * np.pi / 2
        d = np.array([np.cos(a), np.sin(a)])
        sp.put(sp.lines([c + d * 0.25 * R, c + d * 1.0 * R], max(2.0, 0.12 * R)) * m, dark, 0.65)
    sp.dome(m, 0.2 * R, gloss=0.9, shininess=50)
    cap = c + rng.uniform(-0.06, 0.06, 2) * R
    sp.put(sp.circle(cap, 0.27 * R), stem * 0.75)
    sp.put(sp.ring(cap, 0.27 * R, max(1.0, 0.04 * R)), stem * 0.45, 0.8)
    ang = rng.uniform(0, 2 * np.pi)
    tip = cap + np.array([np.cos(ang), np.sin(ang)]) * 0.3 * R
    sp.put(sp.lines([cap, tip], max(2.0, 0.16 * R)), stem)
    sp.put(sp.circle(tip, max(1.0, 0.08 * R)), stem * 0.6 + 90)


def _paint_avocado(sp: _Sprite, p: Product) -> None:
    skin, dark, pebble = _cols(p)
    rng, c, w, h = sp.rng, sp.c, sp.w, sp.h
    big_r, small_r = 0.5 * h, 0.33 * h
    big_c = c + np.array([w / 2 - big_r, 0])
    small_c = c + np.array([-w / 2 + small_r, rng.uniform(-0.06, 0.06) * h])
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    circ = np.stack([np.cos(t), np.sin(t)], 1)
    hull = cv2.convexHull(np.vstack([big_c + big_r * circ, small_c + small_r * circ]).astype(np.float32))[:, 0, :]
    m = sp.poly(hull)
    colour = skin[None, None, :] + (dark - skin)[None, None, :] * np.clip(0.3 + 0.5 * sp.tex("coarse"), 0, 1)[:, :, None]
    sp.put(m, colour)
    bumps = np.clip((sp.tex("fine") - 0.6) * 1.2, 0, 1)
    sp.put(m * bumps, pebble, 0.7)
    sp.put(sp.circle(small_c - np.array([small_r * 0.85, 0]), 0.1 * h), (40, 70, 95))
    sp.dome(m, 0.35 * h, gloss=0.2, shininess=14)


# ---------------------------------------------------------- upright round packs


def _slices(sp: _Sprite, profile, height_mm: float, steps_min: int = 8):
    """Draw an upright body of revolution bottom-up: later (higher) slices cover lower ones.

    ``profile(t) -> (radius_px, bgr, alpha255)`` for t in [0, 1] from the base to the top.
    Returns the colour/alpha layers and the top's centre and scale.
    """
    img = np.zeros((sp.H, sp.W, 3), np.uint8)
    am = np.zeros((sp.H, sp.W), np.uint8)
    d = sp.shift(height_mm)
    k = sp.parallax(height_mm)
    n = max(steps_min, int(np.ceil(np.hypot(*d) * 1.5)) + 2)
    for i in range(n + 1):
        t = i / n
        rad, colour, alpha = profile(t)
        cc = sp.c + d * t
        rad *= 1 + k * t
        col = tuple(float(v) for v in np.clip(colour, 0, 255))
        cv2.circle(img, (_fx(cc[0]), _fx(cc[1])), max(1, _fx(rad)), col, -1, _AA, 4)
        cv2.circle(am, (_fx(cc[0]), _fx(cc[1])), max(1, _fx(rad)), float(alpha), -1, _AA, 4)
    return img, am, sp.c + d, 1 + k


def _paint_can(sp: _Sprite, p: Product) -> None:
    body, band, lid = _cols(p)
    rng = sp.rng
    Rb = min(sp.w, sp.h) / 2

    def profile(t):
        shade = 0.5 + 0.3 * t
        colour = band if 0.35 <= t <= 0.55 else body
        return Rb * (1 - 0.05 * max(0.0, t - 0.9) / 0.1), colour * shade, 255

    img, am, ct, k = _slices(sp, profile, _HEIGHT_MM["can"])
    sp.put(sp._done(am), img.astype(np.float32))
    Rt = Rb * 0.95 * k
    dx, dy, r, th = sp.polar(ct)
    r = r / np.float32(Rt)
    top = sp.circle(ct, Rt)
    # Printed shoulder: body colour with the product's band.
    phase = rng.uniform(0, 2 * np.pi)
    if p.mark == "wave":
        bandm = np.abs(r - (0.89 + 0.04 * np.sin(3 * th + phase))) < 0.05
    elif p.mark == "stripes":
        bandm = (np.sin(8 * th + phase) > 0.2) & (r > 0.8)
    else:
        bandm = np.abs(r - 0.89) < 0.055
    bandm = cv2.GaussianBlur(bandm.astype(np.float32), (0, 0), 0.7)
    colour = body[None, None, :] + (band - body)[None, None, :] * bandm[:, :, None]
    sp.put(top, colour)
    lamp = dx * np.float32(sp.light[0]) + dy * np.float32(sp.light[1])
    shoulder = np.clip((r - 0.8) / 0.2, 0, 1)
    sp.tint(top, 1.0 - 0.35 * shoulder + 0.3 * shoulder * lamp / np.float32(Rt))
    # Lid: rim, groove, rivet, tab and score line.
    Rl = 0.78 * Rt
    sp.put(sp.circle(ct, Rl), lid * 0.92)
    sp.put(sp.ring(ct, Rl, max(1.0, 0.05 * Rt)), lid * 1.12)
    sp.put(sp.ring(ct, 0.88 * Rl, max(1.0, 0.04 * Rt)), lid * 0.62)
    sp.tint(sp.circle(ct, 0.86 * Rl), 1.0 + 0.12 * lamp / np.float32(Rt))
    ang = rng.uniform(0, 2 * np.pi)
    dvec = np.array([np.cos(ang), np.sin(ang)])
    open_c = ct - dvec * 0.45 * Rl
    sp.put(sp.ellipse(open_c, (0.24 * Rl, 0.34 * Rl), np.rad2deg(ang), 1), lid * 0.55, 0.9)
    tab = sp.lines([ct - dvec * 0.15 * Rl, ct + dvec * 0.45 * Rl], 0.36 * Rl)
    sp.put(tab, lid * 0.98)
    sp.put(sp.lines([ct - dvec * 0.15 * Rl, ct + dvec * 0.45 * Rl], 0.36 * Rl) - sp.lines(
        [ct - dvec * 0.15 * Rl, ct + dvec * 0.45 * Rl], 0.36 * Rl - 2), lid * 0.6, 0.5)
    sp.put(sp.ellipse(ct + dvec * 0.3 * Rl, (0.09 * Rl, 0.12 * Rl), np.rad2deg(ang)), lid * 0.5)
    sp.put(sp.circle(ct, 0.07 * Rl + 0.5), lid * 0.8)
    # Speculars: the rim arc facing the lamp and a glint on the shoulder.
    glint = np.clip(np.cos(th - np.arctan2(sp.light[1], sp.light[0])), 0, 1) ** 6
    sp.put(sp.ring(ct, Rl, max(1.0, 0.045 * Rt)) * glint, (255, 255, 255), 0.75)
    sp.put(sp.circle(ct + sp.light * 0.9 * Rt, 0.07 * Rt + 0.5) * top, (255, 255, 255), 0.5)


def _paint_bottle(sp: _Sprite, p: Product) -> None:
    body, cap, ring = _cols(p)
    Rb = min(sp.w, sp.h) / 2
    glass = p.mark == "glass"
    body_alpha = 185 if p.mark == "clear" else 255
    neck = 0.3 if glass else 0.34
    cap_r = 0.34 if glass else 0.4

    def radius(t):
        if t < 0.55:
            return 1.0
        if t < 0.82:
            q = (t - 0.55) / 0.27
            return neck + (1 - neck) * np.cos(q * np.pi / 2) ** 1.5
        if t < 0.92:
            return neck
        return cap_r

    def profile(t):
        rad = radius(t) * Rb
        if t >= 0.92:
            return rad, cap * (0.8 + 0.2 * (t - 0.92) / 0.08), 255
        if glass and t >= 0.8:
            return rad, cap * 0.85, 255  # foil capsule over the neck
        if not glass and 0.88 <= t < 0.92:
            return rad, ring * 0.9, 255  # tamper ring
        shade = 0.62 + 0.5 * min(1.0, t / 0.82)
        if not glass and 0.55 < t < 0.82 and int(t * 60) % 3 == 0:
            shade += 0.12  # moulded ribs on the shoulder
        return rad, body * shade, body_alpha

    img, am, ct, k = _slices(sp, profile, _HEIGHT_MM["bottle"])
    sp.put(sp._done(am), img.astype(np.float32))
    edge = sp.ring(sp.c, Rb - 1, max(1.0, 0.04 * Rb))
    sp.put(edge, np.minimum(body * 1.35, 255), 0.8)  # light along the body's silhouette
    Rc = cap_r * Rb * k
    *_, th = sp.polar(ct)
    if glass:
        sp.put(sp.circle(ct, 0.75 * Rc), ring)
        sp.put(sp.ring(ct, 0.75 * Rc, 1), cap * 1.2, 0.8)
    else:
        sp.put(sp.ring(ct, Rc * 0.92, max(1.0, 0.12 * Rc)), cap * 0.75, 0.8)  # knurled skirt
        sp.put(sp.circle(ct, 0.3 * Rc), cap * 1.1, 0.6)
    lamp_ang = np.arctan2(sp.light[1], sp.light[0])
    glint = np.clip(np.cos(th - lamp_ang), 0, 1) ** 4
    sp.put(sp.ring(ct, Rc * 0.85, max(1.0, 0.1 * Rc)) * glint, (255, 255, 255), 0.6)
    # Highlights on the shoulder towards the lamp.
    spot = sp.c + sp.light * 0.55 * Rb + (ct - sp.c) * 0.6
    sp.put(sp.ellipse(spot, (0.16 * Rb, 0.07 * Rb), np.rad2deg(lamp_ang) + 90), (255, 255, 255), 0.7 if glass else 0.5)
    sp.put(sp.circle(sp.c - sp.light * 0.8 * Rb, 0.05 * Rb + 0.5), (255, 255, 255), 0.35)


def _paint_cup(sp: _Sprite, p: Product) -> None:
    rim, foil, printc = _cols(p)
    rng, c = sp.rng, sp.c
    R = min(sp.w, sp.h) / 2 / 1.08
    ang = rng.uniform(0, 2 * np.pi)
    dvec = np.array([np.cos(ang), np.sin(ang)])
    tab = sp.lines([c + dvec * 0.8 * R, c + dvec * 1.02 * R], 0.36 * R)
    sp.put(tab, foil * 0.95)
    m = sp.circle(c, R)
    sp.put(m, rim)
    sp.dome(sp.ring(c, 0.95 * R, max(1.0, 0.1 * R)), 0.05 * R, strength=0.7)
    lid = sp.circle(c, 0.86 * R)
    sp.put(lid, foil)
    sp.tint(lid, 1.0 + 0.07 * sp.tex("mid"))
    berry = c + np.array([-0.2, 0.08]) * R
    sp.put(sp.poly(_star(berry + (0, -0.02 * R), 0.14 * R, 0.06 * R, 5, -np.pi / 2)), (60, 150, 50))
    sp.put(sp.poly(np.array([berry + (-0.18 * R, 0), berry + (0.18 * R, 0), berry + (0, 0.3 * R)])), printc)
    sp.put(sp.circle(berry + (-0.09 * R, 0.02 * R), 0.1 * R), printc)
    sp.put(sp.circle(berry + (0.09 * R, 0.02 * R), 0.1 * R), printc)
    if p.label:
        sp.put(sp.text(p.label, c + np.array([0.2, -0.25]) * R, 0.8 * R, 0.3 * R), printc)
    sp.dome(lid, 0.15 * R, strength=0.3, gloss=0.25, shininess=6)


# ---------------------------------------------------------------- flat packs


def _paint_carton(sp: _Sprite, p: Product) -> None:
    panel, printc, cap = _cols(p)
    rng, c, w, h = sp.rng, sp.c, sp.w, sp.h
    base = np.array([c + (-w / 2, -h / 2), c + (w / 2, -h / 2), c + (w / 2, h / 2), c + (-w / 2, h / 2)])
    top = sp.walls(base, _HEIGHT_MM["carton"], printc)
    o = top.mean(axis=0)
    up = sp.poly([top[0], top[1], (top[1][0], o[1]), (top[0][0], o[1])])
    dn = sp.poly([(top[3][0], o[1]), (top[2][0], o[1]), top[2], top[3]])
    sp.put(up, panel)
    sp.put(dn, panel)
    face = np.maximum(up, dn)
    _, dy = sp.grid(o)
    edge = (np.abs(dy) > np.float32(0.36 * h)).astype(np.float32)
    sp.put(face * edge, printc)
    sp.tint(up, 1.0 - 0.18 * sp.light[1])
    sp.tint(dn, 1.0 + 0.18 * sp.light[1])
    fin = sp.poly([o + (-w / 2, -0.04 * h), o + (w / 2, -0.04 * h), o + (w / 2, 0.04 * h), o + (-w / 2, 0.04 * h)])
    sp.put(fin, panel * 1.04)
    sp.put(sp.lines([o + (-w / 2, 0.04 * h), o + (w / 2, 0.04 * h)], 1), panel * 0.6, 0.7)
    side = 1 if rng.random() < 0.5 else -1
    cc = o + np.array([0.2 * w, side * 0.2 * h])
    sp.put(sp.circle(cc, 0.15 * w), cap)
    sp.put(sp.ring(cc, 0.15 * w, max(1.0, 0.03 * w)), cap * 0.6)
    sp.dome(sp.circle(cc, 0.15 * w), 0.04 * w, gloss=0.4, shininess=20)
    if p.label:
        sp.put(sp.text(p.label, o + np.array([-0.12 * w, -side * 0.2 * h]), 0.55 * w, 0.22 * h), printc)


def _paint_box(sp: _Sprite, p: Product) -> None:
    body, band, logo = _cols(p)
    rng, c, w, h = sp.rng, sp.c, sp.w, sp.h
    base = _rounded_rect_pts(c[0] - w / 2, c[1] - h / 2, c[0] + w / 2, c[1] + h / 2, 0.015 * h, 3)
    top = sp.walls(base, _HEIGHT_MM["box"] * min(1.0, h / (180 * sp.s)), body)
    o = top.mean(axis=0)
    x0, y0, x1, y1 = o[0] - w / 2, o[1] - h / 2, o[0] + w / 2, o[1] + h / 2
    face = sp.poly(top)
    sp.put(face, body)
    sp.tint(face, 1.0 + 0.03 * sp.tex("mid"))
    sp.put(sp.poly(_rounded_rect_pts(x0, y0, x1, y0 + 0.22 * h, 0)) * face, band)
    sp.put(sp.poly(_rounded_rect_pts(x0, y1 - 0.08 * h, x1, y1, 0)) * face, band)
    lc = np.array([x0 + 0.2 * w, o[1] + 0.14 * h])
    lr = 0.24 * min(h, 0.5 * w)
    if p.mark == "circle":
        sp.put(sp.circle(lc, lr), logo)
        sp.put(sp.ring(lc, 0.68 * lr, max(1.0, 0.14 * lr)), (245, 245, 245))
    elif p.mark == "star":
        sp.put(sp.poly(_star(lc, 1.1 * lr, 0.5 * lr, 5, -np.pi / 2)), logo)
    elif p.mark == "leaf":
        sp.put(sp.ellipse(lc, (1.05 * lr, 0.55 * lr), -35), logo)
        sp.put(sp.lines([lc + (-0.8 * lr, 0.55 * lr), lc + (0.8 * lr, -0.55 * lr)], max(1.0, 0.1 * lr)), body)
    text = _text_colour(body, band)
    if p.label:
        sp.put(sp.text(p.label, (x0 + 0.66 * w, o[1] + 0.13 * h), 0.58 * w, 0.28 * h), text)
    if p.label:  # brand line in the top band
        sp.put(sp.text(p.label.split()[0], (x0 + 0.5 * w, y0 + 0.11 * h), 0.3 * w, 0.12 * h, bold=False), body)
    # Glossy print: a broad soft sheen band.
    dx, dy = sp.grid(o)
    phi = rng.uniform(0, np.pi)
    d = (dx * np.float32(np.cos(phi)) + dy * np.float32(np.sin(phi))) / np.float32(0.2 * max(w, h)) - np.float32(rng.uniform(-1.5, 1.5))
    sp.put(face * np.exp(-d * d), (255, 255, 255), 0.18)
    sp.put(sp.lines(top, 1, closed=True), body * 0.7, 0.6)


def _paint_block(sp: _Sprite, p: Product) -> None:
    foil, fold, printc = _cols(p)
    rng, c, w, h = sp.rng, sp.c, sp.w, sp.h
    base = _rounded_rect_pts(c[0] - w / 2, c[1] - h / 2, c[0] + w / 2, c[1] + h / 2, 0.04 * h, 3)
    top = sp.walls(base, _HEIGHT_MM["block"], foil)
    o = top.mean(axis=0)
    x0, y0, x1, y1 = o[0] - w / 2, o[1] - h / 2, o[0] + w / 2, o[1] + h / 2
    face = sp.poly(top)
    sp.put(face, foil)
    sp.tint(face, 1.0 + 0.12 * sp.tex("mid") + 0.05 * sp.tex("fine"))
    for sgn, xe in ((1, x0), (-1, x1)):
        tri = np.array([(xe, y0), (xe + sgn * 0.17 * w, o[1]), (xe, y1)])
        sp.put(sp.poly(tri), fold)
        sp.put(sp.lines(tri, 1), fold * 0.7, 0.7)
    lab = _rounded_rect_pts(o[0] - 0.27 * w, o[1] - 0.25 * h, o[0] + 0.27 * w, o[1] + 0.25 * h, 0.05 * h)
    sp.put(sp.poly(lab), printc)
    if p.label:
        sp.put(sp.text(p.label, o, 0.46 * w, 0.3 * h), (240, 245, 245))
    sp.dome(face, 0.06 * h, strength=0.6, gloss=0.45, shininess=10)
    dx, dy = sp.grid(o)
    phi = rng.uniform(0, np.pi)
    d = (dx * np.float32(np.cos(phi)) + dy * np.float32(np.sin(phi))) / np.float32(0.15 * w) - np.float32(rng.uniform(-1.5, 1.5))
    sp.put(face * np.exp(-d * d), (255, 255, 255), 0.3)


def _paint_bag(sp: _Sprite, p: Product) -> None:
    film, panel, printc = _cols(p)
    rng, c, w, h = sp.rng, sp.c, sp.w, sp.h
    seal = 0.08 * h
    x0, y0, x1, y1 = c[0] - w / 2, c[1] - h / 2, c[0] + w / 2, c[1] + h / 2
    # Outline: crimped seals at both ends, bulging sides in between.
    teeth = max(6, int(w / (5 * sp.s)))
    tx = np.linspace(x0, x1, 2 * teeth + 1)
    ty = np.where(np.arange(2 * teeth + 1) % 2 == 0, 0.0, 0.012 * h)
    ys = np.linspace(y0 + seal, y1 - seal, 24)
    q = (ys - (y0 + seal)) / (h - 2 * seal)
    bulge = w / 2 * (0.94 + 0.06 * np.sin(np.pi * q))
    pts = np.vstack([
        np.stack([tx, y0 + ty], 1),
        np.stack([c[0] + bulge, ys], 1),
        np.stack([tx[::-1], y1 - ty[::-1]], 1),
        np.stack([c[0] - bulge[::-1], ys[::-1]], 1),
    ])
    m = sp.poly(pts)
    sp.put(m, film)
    dx, dy = sp.grid(c)
    seals = (np.abs(dy) > np.float32(h / 2 - seal)).astype(np.float32)
    crimp = np.sin(dx * np.float32(2 * np.pi / max(2.5, 3 * sp.s)))
    sp.tint(m * seals, 1.0 + 0.16 * crimp)
    if p.mark == "valve":
        sp.put(sp.poly(_rounded_rect_pts(x0, c[1] + 0.12 * h, x1, c[1] + 0.26 * h, 0)) * m, panel)
        vc = c + np.array([0, -0.3 * h])
        vr = 0.09 * w
        sp.put(sp.circle(vc, vr), (150, 150, 155))
        sp.put(sp.ring(vc, 0.6 * vr, max(1.0, 0.15 * vr)), (90, 90, 95))
        if p.label:
            sp.put(sp.text(p.label, c + np.array([0, -0.05 * h]), 0.72 * w, 0.12 * h), printc)
        for _ in range(4):
            bc = c + np.array([rng.uniform(-0.28, 0.28) * w, rng.uniform(0.3, 0.38) * h])
            ang = rng.uniform(0, 180)
            sp.put(sp.ellipse(bc, (0.07 * w, 0.045 * w), ang), (30, 60, 100))
            a = np.deg2rad(ang)
            dv = np.array([np.cos(a), np.sin(a)]) * 0.05 * w
            sp.put(sp.lines([bc - dv, bc + dv], 1), (20, 30, 50))
    else:
        oc = c + np.array([0, -0.05 * h])
        sp.put(sp.ellipse(oc, (0.4 * w, 0.2 * h)), panel)
        sp.put(sp.ellipse(oc, (0.4 * w, 0.2 * h), 0, max(1, int(0.015 * w))), (245, 245, 245))
        if p.label:
            sp.put(sp.text(p.label, oc, 0.64 * w, 0.14 * h), printc)
        for i in range(3):  # crisps
            cc = c + np.array([(i - 1) * 0.24 * w, 0.27 * h + rng.uniform(-0.03, 0.03) * h])
            sp.put(sp.ellipse(cc, (0.1 * w, 0.065 * w), rng.uniform(0, 180)), (110, 200, 235))
    for _ in range(int(rng.integers(4, 8))):  # wrinkles in the film
        a = rng.uniform(0, np.pi)
        pc = c + np.array([rng.uniform(-0.4, 0.4) * w, rng.uniform(-0.4, 0.4) * h])
        dv = np.array([np.cos(a), np.sin(a)]) * rng.uniform(0.08, 0.2) * w
        line = sp.lines([pc - dv, pc + dv], max(1.0, 0.8 * sp.s))
        sp.put(line * m, (255, 255, 255), 0.3)
        sp.put(sp.lines([pc - dv + 1.5, pc + dv + 1.5], max(1.0, 0.8 * sp.s)) * m, (0, 0, 0), 0.2)
    sp.dome(m, 0.18 * min(w, h), strength=0.8, gloss=0.45, shininess=10)


def _paint_tray(sp: _Sprite, p: Product) -> None:
    trayc, content, labelc = _cols(p)
    rng, c, w, h = sp.rng, sp.c, sp.w, sp.h
    rr = 0.12 * min(w, h)
    base = _rounded_rect_pts(c[0] - w / 2, c[1] - h / 2, c[0] + w / 2, c[1] + h / 2, rr)
    top = sp.walls(base, _HEIGHT_MM["tray"], trayc)
    o = top.mean(axis=0)
    x0, y0, x1, y1 = o[0] - w / 2, o[1] - h / 2, o[0] + w / 2, o[1] + h / 2
    face = sp.poly(top)
    sp.put(face, trayc)
    inset = 0.09 * min(w, h)
    well_pts = _rounded_rect_pts(x0 + inset, y0 + inset, x1 - inset, y1 - inset, rr * 0.7)
    well = sp.poly(well_pts)
    sp.put(well, trayc * 0.9)
    sp.put(sp.lines(well_pts, 1, closed=True), trayc * 0.65, 0.8)
    if p.mark == "mince":
        cm = sp.poly(_outline(o, (w / 2 - inset) * 0.92, (h / 2 - inset) * 0.88, rng, ((3, 0.03), (5, 0.03), (9, 0.02)), 120))
        fine = sp.tex("fine")
        colour = content[None, None, :] * (0.8 + 0.22 * np.clip(fine, -1.5, 1.5))[:, :, None]
        fat = np.clip((fine - 1.2) * 2.0, 0, 1)
        colour = colour + (np.float32([175, 185, 235]) - colour) * fat[:, :, None]
        sp.put(cm * well, colour)
        sp.dome(cm, 0.1 * min(w, h), strength=0.7)
    else:  # berries in a ribbed punnet
        dx, dy = sp.grid(o)
        ribs = (np.sin(dx * np.float32(2 * np.pi / max(4.0, 9 * sp.s))) > 0.7).astype(np.float32)
        sp.tint(face * ribs, 1.12)
        br = 0.2 * min(w, h)
        centres: list[np.ndarray] = []
        for _ in range(60):
            bc = o + np.array([rng.uniform(-1, 1) * (w / 2 - inset - br), rng.uniform(-1, 1) * (h / 2 - inset - br)])
            if all(np.hypot(*(bc - q)) > 1.15 * br for q in centres):
                centres.append(bc)
            if len(centres) >= 10:
                break
        bm_all = np.zeros((sp.H, sp.W), np.float32)
        for bc in centres:
            a = rng.uniform(0, 2 * np.pi)
            dv = np.array([np.cos(a), np.sin(a)])
            nv = np.array([-dv[1], dv[0]])
            t = np.linspace(0, 2 * np.pi, 28, endpoint=False)[:, None]
            along = np.cos(t) * np.where(np.cos(t) > 0, 1.15, 0.8)
            across = np.sin(t) * (1.0 - 0.5 * (np.cos(t) + 1) / 2)  # narrow towards the tip
            shape = bc + dv * along * br + nv * across * 0.95 * br
            bm = sp.poly(shape)
            sp.put(bm, content)
            bm_all = np.maximum(bm_all, bm)
            sp.put(sp.poly(_star(bc - dv * 0.62 * br, 0.42 * br, 0.14 * br, 5, a)), (50, 140, 60))
        seeds = np.clip((sp.tex("fine") - 1.6) * 3.0, 0, 1)
        sp.put(bm_all * seeds, (80, 200, 230), 0.8)
        sp.dome(bm_all, 0.3 * br, gloss=0.5, shininess=30)
    # Cling film sheen.
    dx, dy = sp.grid(o)
    phi = rng.uniform(0, np.pi)
    for off in rng.uniform(-1.2, 1.2, 2):
        d = (dx * np.float32(np.cos(phi)) + dy * np.float32(np.sin(phi))) / np.float32(0.08 * max(w, h)) - np.float32(off * 3)
        sp.put(face * np.exp(-d * d), (255, 255, 255), 0.22)
    if p.label:
        lx0, ly0 = x1 - 0.4 * w, y1 - 0.36 * h
        sticker = sp.poly(_rounded_rect_pts(lx0, ly0, lx0 + 0.34 * w, ly0 + 0.28 * h, 2))
        sp.put(sticker, labelc)
        sp.put(sp.text(p.label, (lx0 + 0.17 * w, ly0 + 0.08 * h), 0.28 * w, 0.1 * h), (40, 40, 180))
        for i in range(9):
            bx = lx0 + 0.04 * w + i * 0.028 * w
            sp.put(sp.lines([(bx, ly0 + 0.15 * h), (bx, ly0 + 0.25 * h)], 1 + (i % 3 == 0)), (30, 30, 30))


def _paint_eggbox(sp: _Sprite, p: Product) -> None:
    card, dark, labelc = _cols(p)
    c, w, h = sp.c, sp.w, sp.h
    base = _rounded_rect_pts(c[0] - w / 2, c[1] - h / 2, c[0] + w / 2, c[1] + h / 2, 0.1 * h)
    top = sp.walls(base, _HEIGHT_MM["eggbox"], dark)
    o = top.mean(axis=0)
    face = sp.poly(top)
    sp.put(face, card)
    sp.tint(face, 1.0 + 0.035 * sp.tex("mid") + 0.03 * sp.tex("fine"))
    domes = np.zeros((sp.H, sp.W), np.float32)
    for i in (-1, 0, 1):
        for j in (-1, 1):
            dm = sp.circle(o + np.array([i * w / 3.1, j * h / 4]), 0.22 * h)
            domes = np.maximum(domes, dm)
    sp.dome(domes, 0.07 * h, strength=0.9)
    sp.dome(face, 0.05 * h, strength=0.6)
    lab = _rounded_rect_pts(o[0] - 0.36 * w, o[1] - 0.13 * h, o[0] + 0.36 * w, o[1] + 0.13 * h, 0.03 * h)
    sp.put(sp.poly(lab), labelc)
    if p.label:
        sp.put(sp.text(p.label, o, 0.5 * w, 0.17 * h), (245, 245, 245))


_PAINTERS = {
    "banana": _paint_banana, "apple": _paint_apple, "citrus": _paint_citrus, "lemon": _paint_lemon,
    "tomato": _paint_tomato, "cucumber": _paint_cucumber, "broccoli": _paint_broccoli,
    "potato": _paint_potato, "pepper": _paint_pepper, "avocado": _paint_avocado,
    "can": _paint_can, "bottle": _paint_bottle, "cup": _paint_cup, "carton": _paint_carton,
    "box": _paint_box, "block": _paint_block, "bag": _paint_bag, "tray": _paint_tray,
    "eggbox": _paint_eggbox,
}


# ===================================================================== the hand


class _HandGeometry:
    """A flat hand on a forearm, seen from above; drawn along ``direction`` from ``entry``."""

    def __init__(self, rng, scale: float) -> None:
        s = scale * rng.uniform(0.85, 1.15)
        self.palm_len = 85 * s
        self.palm_w = 78 * s
        self.arm_w = 62 * s
        self.finger_w = 17 * s
        self.fingers = [l * s * rng.uniform(0.9, 1.1) for l in (62, 70, 66, 52)]
        self.spread = np.deg2rad(rng.uniform(0, 10))
        self.thumb_angle = np.deg2rad(rng.uniform(25, 55))
        self.side = 1 if rng.random() < 0.5 else -1  # left or right hand
        self.skin = np.array(_SKIN_TONES[int(rng.integers(len(_SKIN_TONES)))], np.float32) + rng.uniform(-8, 8, 3).astype(np.float32)
        self.sleeve = np.array(_SLEEVE_COLOURS[int(rng.integers(len(_SLEEVE_COLOURS)))], np.float32)
        self.sleeve_at = rng.uniform(90, 170) * s  # distance from the wrist back along the arm
        self.rng = rng

    def _parts(self, entry, direction, reach):
        """Polylines (points, thickness) and ellipses of the skin; the sleeve polygon."""
        d = np.asarray(direction, np.float64)
        n = np.array([-d[1], d[0]]) * self.side
        tip_u = reach
        wrist_u = tip_u - max(self.fingers) - self.palm_len
        wrist = entry + d * wrist_u
        knuckle = entry + d * (wrist_u + self.palm_len * 0.92)
        strokes = [([entry - d * 60, wrist + d * 10], self.arm_w)]
        for i, length in enumerate(self.fingers):
            off = (i - 1.5) / 1.5
            a = off * self.spread
            fd = d * np.cos(a) + n * np.sin(a)
            base = knuckle + n * off * 0.36 * self.palm_w
            strokes.append(([base, base + fd * length], self.finger_w * (1.0 if i < 3 else 0.85)))
        tb = wrist + d * 0.3 * self.palm_len + n * 0.42 * self.palm_w
        td = d * np.cos(self.thumb_angle) + n * np.sin(self.thumb_angle)
        strokes.append(([tb, tb + td * 0.62 * self.palm_len], self.finger_w * 1.15))
        palm = (wrist + d * self.palm_len / 2, (self.palm_len / 2, self.palm_w / 2), np.rad2deg(np.arctan2(d[1], d[0])))
        cuff = wrist - d * self.sleeve_at
        sleeve_w = self.arm_w * 1.35
        sleeve = np.array([entry - d * 80 + n * sleeve_w / 2, cuff + n * sleeve_w / 2,
                           cuff - n * sleeve_w / 2, entry - d * 80 - n * sleeve_w / 2])
        nails = [(s[0][1] - (s[0][1] - s[0][0]) / np.linalg.norm(s[0][1] - s[0][0]) * s[1] * 0.35, s[1] * 0.3)
                 for s in strokes[1:]]
        return strokes, palm, sleeve, nails

    @staticmethod
    def _draw(layer, strokes, palm, ox, oy):
        off = np.array([ox, oy])
        for pts, thick in strokes:
            cv2.polylines(layer, [_fixed(np.asarray(pts) - off)], False, 255, max(1, int(round(thick))), _AA, 4)
        (pc, axes, ang) = palm
        cv2.ellipse(layer, (_fx(pc[0] - ox), _fx(pc[1] - oy)), (_fx(axes[0]), _fx(axes[1])), float(ang), 0, 360,
                    255, -1, _AA, 4)

    def mask(self, entry, direction, reach, ox, oy, shape) -> np.ndarray:
        """Hand+sleeve coverage on a window at (ox, oy) of the given shape."""
        strokes, palm, sleeve, _ = self._parts(entry, direction, reach)
        layer = np.zeros(shape, np.uint8)
        self._draw(layer, strokes, palm, ox, oy)
        cv2.fillPoly(layer, [_fixed(sleeve - np.array([ox, oy]))], 255, _AA, 4)
        return layer.astype(np.float32) / 255.0

    def render(self, entry, direction, reach, width, height, tex, lamp):
        strokes, palm, sleeve, nails = self._parts(entry, direction, reach)
        pts = np.vstack([np.vstack([np.asarray(s[0]) for s in strokes]), sleeve, [palm[0]]])
        pad = self.palm_w
        x0 = int(max(0, pts[:, 0].min() - pad))
        y0 = int(max(0, pts[:, 1].min() - pad))
        x1 = int(min(width, pts[:, 0].max() + pad))
        y1 = int(min(height, pts[:, 1].max() + pad))
        # Paint in frame orientation on the window (x0, y0)-(x1, y1); the hand is flat (no parallax).
        sp = _Sprite(self.rng, tex, x1 - x0 - 10, y1 - y0 - 10, 1.0, lamp, np.deg2rad(55), (0.0, 0.0), 0.0)
        skin = np.zeros((sp.H, sp.W), np.uint8)
        self._draw(skin, strokes, palm, x0, y0)
        skin_f = skin.astype(np.float32) / 255.0
        sp.put(skin_f, self.skin)
        sp.tint(skin_f, 1.0 + 0.02 * sp.tex("mid"))
        for (nc, nr) in nails:
            sp.put(sp.circle(nc - np.array([x0, y0]), nr), np.minimum(self.skin * 1.18 + 15, 255), 0.8)
        sp.dome(skin_f, 0.22 * self.finger_w + 3, strength=0.8, gloss=0.15, shininess=8)
        sl = np.zeros((sp.H, sp.W), np.uint8)
        cv2.fillPoly(sl, [_fixed(sleeve - np.array([x0, y0]))], 255, _AA, 4)
        sl_f = sl.astype(np.float32) / 255.0
        sp.put(sl_f, self.sleeve)
        sp.tint(sl_f, 1.0 + 0.08 * sp.tex("mid"))
        sp.dome(sl_f, 0.25 * self.arm_w, strength=0.8)
        return sp.col * sp.a[:, :, None], sp.a, x0, y0


# ================================================================== utilities


def _texture_bank(rng) -> dict[str, np.ndarray]:
    size = 384
    return {
        "fine": _noise_field(rng, (size, size), 0.7),
        "mid": _noise_field(rng, (size, size), 2.0),
        "coarse": _noise_field(rng, (size, size), 7.0),
    }


def _noise_field(rng, shape, sigma: float) -> np.ndarray:
    """Zero-mean, unit-std smooth noise."""
    if sigma > 4:  # wide blur: draw it coarse and interpolate
        f = sigma / 3.0
        small = (int(np.ceil(shape[0] / f)) + 2, int(np.ceil(shape[1] / f)) + 2)
        n = cv2.GaussianBlur(rng.standard_normal(small).astype(np.float32), (0, 0), 3.0, borderType=cv2.BORDER_REFLECT)
        n = cv2.resize(n, (int(small[1] * f), int(small[0] * f)), interpolation=cv2.INTER_CUBIC)[: shape[0], : shape[1]]
        n = np.ascontiguousarray(n)
    else:
        n = rng.standard_normal(shape).astype(np.float32)
        n = cv2.GaussianBlur(n, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    n -= n.mean()
    return n / max(float(n.std()), 1e-6)


def _rotate(premul: np.ndarray, alpha: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate a sprite by ``angle`` (local x axis -> (cos, sin) in the frame) onto a fitting canvas."""
    h, w = alpha.shape
    ca, sa = np.cos(angle), np.sin(angle)
    rw = int(np.ceil(abs(ca) * w + abs(sa) * h)) + 2
    rh = int(np.ceil(abs(sa) * w + abs(ca) * h)) + 2
    cx, cy = w / 2, h / 2
    mat = np.float32([[ca, -sa, rw / 2 - (ca * cx - sa * cy)], [sa, ca, rh / 2 - (sa * cx + ca * cy)]])
    out_c = cv2.warpAffine(premul, mat, (rw, rh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    out_a = cv2.warpAffine(alpha, mat, (rw, rh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return out_c, out_a


def _motion_blur(rng, premul, alpha, scale):
    length = int(rng.integers(4, 11) * scale) | 1
    k = np.zeros((length, length), np.float32)
    k[length // 2, :] = 1.0
    k = cv2.warpAffine(k, cv2.getRotationMatrix2D((length // 2, length // 2), float(rng.uniform(0, 180)), 1.0),
                       (length, length))
    k /= max(float(k.sum()), 1e-6)
    p = length // 2 + 1
    premul = cv2.copyMakeBorder(premul, p, p, p, p, cv2.BORDER_CONSTANT, value=0)
    alpha = cv2.copyMakeBorder(alpha, p, p, p, p, cv2.BORDER_CONSTANT, value=0)
    return cv2.filter2D(premul, -1, k), cv2.filter2D(alpha, -1, k)


def _clip_slices(ox: int, oy: int, w: int, h: int, fw: int, fh: int):
    fx0, fy0 = max(0, ox), max(0, oy)
    fx1, fy1 = min(fw, ox + w), min(fh, oy + h)
    if fx1 <= fx0 or fy1 <= fy0:
        return None, None
    return (slice(fy0, fy1), slice(fx0, fx1)), (slice(fy0 - oy, fy1 - oy), slice(fx0 - ox, fx1 - ox))


def _composite(canvas: np.ndarray, premul: np.ndarray, alpha: np.ndarray, ox: int, oy: int) -> None:
    fs, ls = _clip_slices(ox, oy, alpha.shape[1], alpha.shape[0], canvas.shape[1], canvas.shape[0])
    if fs is None:
        return
    roi = canvas[fs]
    roi *= (1.0 - alpha[ls])[:, :, None]
    roi += premul[ls]


def _paste_max(cover: np.ndarray, alpha: np.ndarray, ox: int, oy: int) -> None:
    fs, ls = _clip_slices(ox, oy, alpha.shape[1], alpha.shape[0], cover.shape[1], cover.shape[0])
    if fs is not None:
        np.maximum(cover[fs], alpha[ls], out=cover[fs])


def _visible_boxes(items: list[_Item], cover: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Tight boxes of what is left visible of each item under later items and ``cover``."""
    cover = cover.copy()
    fh, fw = cover.shape
    boxes: list[tuple[int, int, int, int]] = []
    for item in reversed(items):
        fs, ls = _clip_slices(item.ox, item.oy, item.alpha.shape[1], item.alpha.shape[0], fw, fh)
        a = item.alpha[ls]
        vis = a * (1.0 - cover[fs])
        box = _tight_box(vis > _VISIBLE_ALPHA)
        if box is None:  # fully hidden: keep the placement box
            boxes.append(item.box)
        else:
            boxes.append((box[0] + fs[1].start, box[1] + fs[0].start, box[2] + fs[1].start, box[3] + fs[0].start))
        cover[fs] = cover[fs] + a * (1.0 - cover[fs])
    return boxes[::-1]


def _tight_box(visible: np.ndarray) -> tuple[int, int, int, int] | None:
    rows = np.nonzero(visible.any(axis=1))[0]
    if len(rows) == 0:
        return None
    cols = np.nonzero(visible.any(axis=0))[0]
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _clash(a, b) -> float:
    """>= 1 when two boxes overlap too much (IoU or intersection over the smaller box)."""
    return max(_iou(a, b) / _MAX_IOU, _overlap(a, b) / _MAX_OVERLAP)


def _overlap(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy / small if small > 0 else 0.0


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
