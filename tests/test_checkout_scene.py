"""The self-checkout scene renderer and its product catalogue (fast: a few hundred renders)."""

from __future__ import annotations

import numpy as np
import pytest

from hw_sim import checkout_scene
from hw_sim.checkout_scene import CheckoutRenderer, CheckoutScene
from hw_sim.products import CATALOG, SHAPES, Product, by_sku

W, H = 640, 480


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _check_boxes(scene: CheckoutScene, width: int = W, height: int = H, min_side: float = 40) -> None:
    assert scene.image.shape == (height, width, 3) and scene.image.dtype == np.uint8
    for item in scene.items:
        x1, y1, x2, y2 = item.box
        assert all(isinstance(v, int) for v in item.box)
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, item
        assert min(x2 - x1, y2 - y1) >= min_side, item


# ------------------------------------------------------------------ catalogue


def test_catalog_has_enough_unique_products():
    skus = [p.sku for p in CATALOG]
    assert len(CATALOG) >= 24
    assert len(set(skus)) == len(skus)
    assert len({p.name for p in CATALOG}) == len(CATALOG)
    assert any(p.priced_by_weight for p in CATALOG) and any(not p.priced_by_weight for p in CATALOG)
    for p in CATALOG:
        assert isinstance(p, Product)
        assert p.sku.isdigit() and len(p.sku) in (4, 13)
        assert p.price_cents > 0 and p.weight_g > 0
        assert p.shape in SHAPES and len(p.colors) >= len(SHAPES[p.shape])
        assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in p.colors)
        assert min(p.size_mm) >= 50  # >= 40 px at 0.8 px/mm


def test_by_sku():
    for p in CATALOG:
        assert by_sku(p.sku) is p
    assert by_sku("4011").name == "Banana"
    with pytest.raises(KeyError):
        by_sku("0000")


def test_product_is_frozen():
    with pytest.raises(AttributeError):
        CATALOG[0].price_cents = 1  # type: ignore[misc]


# ------------------------------------------------------------------- renderer


def test_deterministic_per_seed():
    a, b, c = CheckoutRenderer(seed=11), CheckoutRenderer(seed=11), CheckoutRenderer(seed=12)
    for _ in range(4):
        sa, sb = a.render(), b.render()
        assert sa.items == sb.items
        assert np.array_equal(sa.image, sb.image)
    assert np.array_equal(a.render_empty(), b.render_empty())
    sa, sb = a.render(["4011", by_sku("4016").sku]), b.render(["4011", "4016"])
    assert sa.items == sb.items and np.array_equal(sa.image, sb.image)
    assert not np.array_equal(a.render().image, c.render().image)


def test_every_requested_product_is_rendered():
    renderer = CheckoutRenderer(seed=3)
    for p in CATALOG:
        scene = renderer.render([p.sku])
        assert [i.sku for i in scene.items] == [p.sku]
        _check_boxes(scene)
    skus = ["4011", CATALOG[12].sku, CATALOG[-1].sku]
    scene = renderer.render(skus)
    assert [i.sku for i in scene.items] == skus
    _check_boxes(scene)
    assert renderer.render([]).items == ()
    with pytest.raises(KeyError):
        renderer.render(["nope"])


def test_random_scenes():
    renderer = CheckoutRenderer(seed=5)
    counts = {1: 0, 2: 0, 3: 0}
    known = {p.sku for p in CATALOG}
    for _ in range(50):
        scene = renderer.render()
        counts[len(scene.items)] += 1
        _check_boxes(scene)
        assert {i.sku for i in scene.items} <= known
        boxes = [i.box for i in scene.items]
        for i in range(len(boxes)):
            for j in range(i):
                assert _iou(boxes[i], boxes[j]) < 0.1
    assert counts[1] > counts[2] > 0 and counts[3] > 0


def test_boxes_are_tight(monkeypatch):
    """Without noise, shadows, blur or hands, product pixels fill each box out to its edges,
    and nothing outside the boxes (plus a blur margin) differs from the empty platter."""
    monkeypatch.setattr(checkout_scene, "_HAND_RATE", 0.0)
    monkeypatch.setattr(checkout_scene, "_DEFOCUS_RATE", 0.0)
    monkeypatch.setattr(CheckoutRenderer, "_cast_shadow", lambda *args, **kwargs: None)
    renderer = CheckoutRenderer(seed=21, noise_sigma=0.0)
    for k in range(20):
        skus = [CATALOG[k % len(CATALOG)].sku] if k % 2 else None
        scene = renderer.render(skus)
        diff = np.abs(scene.image.astype(np.int16) - renderer.render_empty().astype(np.int16)).max(axis=2)
        changed = diff > 4
        outside = np.ones_like(changed)
        for item in scene.items:
            x1, y1, x2, y2 = item.box
            inner = changed[y1:y2, x1:x2]
            for edge in (inner[0], inner[-1], inner[:, 0], inner[:, -1]):
                assert edge.any(), (item, "box is loose")
            assert inner.mean() > 0.3, item
            m = 7  # motion blur leaves a faint (alpha < 0.5) trail beyond the box
            outside[max(0, y1 - m) : y2 + m, max(0, x1 - m) : x2 + m] = False
        assert not changed[outside].any(), "product pixels outside every box"


def test_hand_keeps_boxes_valid(monkeypatch):
    monkeypatch.setattr(checkout_scene, "_HAND_RATE", 1.0)
    renderer = CheckoutRenderer(seed=8)
    for _ in range(10):
        _check_boxes(renderer.render())


def test_render_empty_and_light():
    renderer = CheckoutRenderer(seed=4, noise_sigma=0.0)
    empty = renderer.render_empty()
    assert empty.shape == (H, W, 3) and empty.dtype == np.uint8
    renderer.render(["4011"])
    after = renderer.render_empty()
    renderer.render(["4011"])
    again = renderer.render_empty()
    # Each render draws a new light; render_empty shows the platter under the latest one.
    assert not np.array_equal(after, again)


@pytest.mark.parametrize("size", [(320, 240), (800, 600)])
def test_other_frame_sizes(size):
    width, height = size
    renderer = CheckoutRenderer(width, height, seed=2)
    scale = min(width / 640, height / 480)
    for _ in range(3):
        _check_boxes(renderer.render(), width, height, min_side=40 * scale)
    with pytest.raises(ValueError):
        CheckoutRenderer(100, 80)
