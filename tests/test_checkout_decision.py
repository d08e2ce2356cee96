"""The checkout decision (agent/postprocess/checkout.py), exactly: identities, prices, the weight
check and every attendant outcome, against a real product database built from the simulator's
catalogue."""

from __future__ import annotations

import pytest

from agent import catalog
from agent.events import Detection
from agent.postprocess.checkout import CheckoutRules, Outcome, Platter, WeightCheck, decide, price_by_weight
from hw_sim.products import by_sku, write_catalog

COLA = "5000112637922"  # 1.29, 350 g
CORN_FLAKES = "5000159012348"  # 3.29, 540 g
YOGURT = "3017620123450"  # 0.59, 160 g
BANANA = "4011"  # 1.99 per kg, 120 g nominal
RULES = CheckoutRules(min_probability=0.85, weight=WeightCheck(tolerance_g=10, tolerance_rel=0.03,
                                                               by_weight_tolerance_rel=0.35))


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    path = tmp_path_factory.mktemp("catalog") / "catalog.db"
    write_catalog(path, version="7")
    db = catalog.Catalog(path)
    yield db
    db.close()


def box(label: str | None, probability: float = 0.99, score: float = 0.9, at: int = 0) -> Detection:
    return Detection(0, "product", score, (10.0 + at, 10.0, 90.0 + at, 90.0),
                     classification=None if label is None else (label, probability))


def nominal(*skus: str) -> float:
    return sum(by_sku(s).weight_g for s in skus)


def test_a_basket_of_packaged_goods_is_charged_per_item(products):
    seen = [box(COLA), box(CORN_FLAKES, at=100), box(COLA, at=200)]
    basket = decide(seen, products, RULES, weight_g=1244.0, weight_change_g=1244.0)
    assert basket.outcome is Outcome.OK and basket.charges
    assert {(line.sku, line.quantity, line.line_total_cents) for line in basket.lines} == {(COLA, 2, 258), (CORN_FLAKES, 1, 329)}
    assert basket.total_cents == 587 and basket.currency == "EUR"
    assert basket.weight.expected_g == nominal(COLA, COLA, CORN_FLAKES) == 1240.0
    assert basket.weight.tolerance_g == pytest.approx(10 + 0.03 * 1240, abs=0.1) and basket.weight.within is True
    assert basket.reason == "2 x Cola 330 ml can, 1 x Corn flakes 500 g"


def test_produce_is_charged_by_the_measured_weight(products):
    basket = decide([box(BANANA), box(BANANA, at=100), box(BANANA, at=200)], products, RULES,
                    weight_g=382.4, weight_change_g=382.4)
    assert basket.outcome is Outcome.OK
    (line,) = basket.lines
    assert line.priced_by_weight and line.quantity == 3 and line.weight_g == 382.4 and line.unit_price_cents == 199
    assert line.line_total_cents == basket.total_cents == 76  # 1.99/kg x 0.3824 kg = 0.7610
    assert price_by_weight(250, 2.0) == 1 and price_by_weight(250, 1.9) == 0  # half a cent rounds up
    assert price_by_weight(199, 1000.04) == 199  # to the scale's 0.1 g


def test_produce_with_other_items_goes_to_the_attendant_to_be_weighed_alone(products):
    basket = decide([box(BANANA), box(COLA)], products, RULES, weight_g=470.0, weight_change_g=470.0)
    assert basket.outcome is Outcome.WEIGH_SEPARATELY and not basket.charges and basket.total_cents is None
    assert "Banana is sold by weight" in basket.reason
    lines = {line.sku: line for line in basket.lines}
    assert lines[BANANA].line_total_cents is None and lines[COLA].line_total_cents == 129


@pytest.mark.parametrize("change, outcome", [
    (350.0 + 10 + 0.03 * 350, Outcome.OK),  # at the tolerance
    (350.0 + 10 + 0.03 * 350 + 0.2, Outcome.WEIGHT_MISMATCH),
    (350.0 - 20.7, Outcome.WEIGHT_MISMATCH),
    (350.0 + 160.0, Outcome.WEIGHT_MISMATCH),  # a yogurt under the can's shadow, not seen
])
def test_weight_check_absolute_plus_relative_tolerance(products, change, outcome):
    basket = decide([box(COLA)], products, RULES, weight_g=change, weight_change_g=change)
    assert basket.outcome is outcome
    assert basket.weight.within is (outcome is Outcome.OK)
    if outcome is Outcome.WEIGHT_MISMATCH:
        assert basket.total_cents is None and basket.reason.startswith(f"measured {change:.0f} g, the items weigh 350 g")


def test_produce_weight_is_checked_loosely_but_checked(products):
    two = [box(BANANA), box(BANANA, at=100)]
    assert decide(two, products, RULES, 310.0, 310.0).outcome is Outcome.OK  # 240 g nominal +- 94 g
    assert decide(two, products, RULES, 600.0, 600.0).outcome is Outcome.WEIGHT_MISMATCH


def test_two_boxes_on_one_product_count_once_but_two_products_lying_close_count_twice(products):
    """The detector sometimes boxes a product twice (the whole and a part): named the same and one
    mostly inside the other, the lower-scoring box goes. Different products overlapping stay."""
    whole = Detection(0, "product", 0.8, (20.0, 200.0, 210.0, 310.0), (BANANA, 0.99))
    part = Detection(0, "product", 0.7, (10.0, 150.0, 200.0, 290.0), (BANANA, 0.9))  # 71% of whole inside it
    basket = decide([part, whole], products, RULES, 131.0, 131.0)
    assert basket.outcome is Outcome.OK and [i.detection for i in basket.items] == [whole]
    assert basket.lines[0].quantity == 1
    beside = Detection(0, "product", 0.7, (200.0, 200.0, 300.0, 310.0), (BANANA, 0.9))  # 10% overlap: a second banana
    assert decide([whole, beside], products, RULES, 250.0, 250.0).lines[0].quantity == 2
    tea_on_eggs = [Detection(0, "product", 0.7, (351.0, 306.0, 561.0, 480.0), ("8717654000127", 0.9)),
                   Detection(0, "product", 0.6, (322.0, 345.0, 477.0, 478.0), ("8711240012341", 0.96))]
    both = decide(tea_on_eggs, products, RULES, 437.0, 437.0)
    assert both.outcome is Outcome.OK and len(both.items) == 2 and both.total_cents == 289 + 249
    kept_all = CheckoutRules(min_probability=0.85, max_box_overlap=None, max_weight_fixes=0)
    assert decide([part, whole], products, kept_all, 131.0, 131.0).outcome is Outcome.WEIGHT_MISMATCH


def test_the_weight_settles_one_unsure_box_or_one_second_box_but_never_guesses(products):
    cola = Detection(0, "product", 0.9, (10.0, 10.0, 80.0, 80.0), (COLA, 0.99))
    faint_yogurt = Detection(0, "product", 0.18, (200.0, 10.0, 270.0, 80.0), (YOGURT, 0.97))
    faint_flakes = Detection(0, "product", 0.15, (300.0, 10.0, 500.0, 200.0), (CORN_FLAKES, 0.95))
    # The yogurt scored under the threshold; the scale says it is there (350 + 160), the flakes are not.
    basket = decide([cola], products, RULES, 511.0, 511.0, unsure=[faint_yogurt, faint_flakes])
    assert basket.outcome is Outcome.OK and basket.added_by_weight == 1 and basket.total_cents == 129 + 59
    assert "the weight confirmed 1 box(es) the detector was unsure of" in basket.reason
    # Under unsure_from, or not surely named: never counted.
    weaker = CheckoutRules(min_probability=0.85, unsure_from=0.2)
    assert decide([cola], products, weaker, 511.0, 511.0, unsure=[faint_yogurt]).outcome is Outcome.WEIGHT_MISMATCH
    unsure_name = Detection(0, "product", 0.18, faint_yogurt.box, (YOGURT, 0.6))
    assert decide([cola], products, RULES, 511.0, 511.0, unsure=[unsure_name]).outcome is Outcome.WEIGHT_MISMATCH
    # Two answers fit the weight (a yogurt, or a second yogurt-weight product): the attendant decides.
    crisps = Detection(0, "product", 0.17, (300.0, 300.0, 400.0, 400.0), ("8720000123456", 0.97))  # 160 g too
    assert decide([cola], products, RULES, 511.0, 511.0, unsure=[faint_yogurt, crisps]).outcome is Outcome.WEIGHT_MISMATCH
    # Two cans seen side by side, one can's weight on the scale: one box was a second box on it.
    split = [cola, Detection(0, "product", 0.5, (80.0, 10.0, 150.0, 80.0), (COLA, 0.9))]
    halved = decide(split, products, RULES, 352.0, 352.0)
    assert halved.outcome is Outcome.OK and halved.dropped_by_weight == 1 and halved.lines[0].quantity == 1
    # A can and a yogurt seen, a can's weight on the scale: different products, nothing is dropped.
    assert decide([cola, Detection(0, "product", 0.5, faint_yogurt.box, (YOGURT, 0.9))], products, RULES,
                  352.0, 352.0).outcome is Outcome.WEIGHT_MISMATCH


def test_unknown_items(products, tmp_path):
    unsure = decide([box(COLA), box(YOGURT, probability=0.6)], products, RULES, 510.0, 510.0)
    assert unsure.outcome is Outcome.UNKNOWN_ITEM and unsure.total_cents is None
    assert unsure.reason == f"item 2: {YOGURT} at probability 0.60, under 0.85"
    assert [i.sku for i in unsure.items] == [COLA, None]
    not_listed = decide([box("9999999999999")], products, RULES, 100.0, 100.0)
    assert not_listed.outcome is Outcome.UNKNOWN_ITEM and "not in the product database" in not_listed.reason
    unclassified = decide([box(None)], products, RULES, 100.0, 100.0)
    assert unclassified.outcome is Outcome.UNKNOWN_ITEM and "not classified" in unclassified.reason
    no_db = decide([box(COLA)], None, RULES, 350.0, 350.0)
    assert no_db.outcome is Outcome.UNKNOWN_ITEM and "no product database" in no_db.reason


def test_nothing_seen_is_a_no_read_and_no_weight_is_not_charged(products):
    empty = decide([], products, RULES, weight_g=350.0, weight_change_g=350.0)
    assert empty.outcome is Outcome.NO_READ and empty.reason == "the weight rose by 350 g but no product was seen"
    unweighed = decide([box(COLA)], products, RULES, weight_g=None, weight_change_g=None)
    assert unweighed.outcome is Outcome.NO_WEIGHT and unweighed.total_cents is None
    assert unweighed.lines[0].line_total_cents == 129  # shown to the attendant


def test_a_product_without_a_nominal_weight_cannot_be_checked(tmp_path):
    path = tmp_path / "c.db"
    catalog.build(path, [catalog.Product("1", "Gift card", 2500, "EUR", False, None, None, "gift")], version="1")
    db = catalog.Catalog(path)
    try:
        basket = decide([box("gift")], db, RULES, 5.5, 5.5)
    finally:
        db.close()
    assert basket.outcome is Outcome.WEIGHT_MISMATCH and "no nominal weight for Gift card" in basket.reason


def test_items_added_to_a_charged_basket_still_on_the_platter_are_charged_alone(products):
    first = decide([box(COLA)], products, RULES, weight_g=351.0, weight_change_g=351.0)
    platter = first.platter_after(351.0)
    assert platter == Platter((COLA,), 351.0)
    second = decide([box(COLA), box(CORN_FLAKES, at=100)], products, RULES, weight_g=893.0, weight_change_g=542.0,
                    on_platter=platter)
    assert second.outcome is Outcome.OK and second.carried == 1 and second.total_cents == 329
    assert [(i.sku, i.carried) for i in second.items] == [(COLA, True), (CORN_FLAKES, False)]
    # The can was taken off in between (the scale settled at 0 before the flakes came): all counted.
    after_removal = decide([box(CORN_FLAKES)], products, RULES, weight_g=542.0, weight_change_g=542.0, on_platter=platter)
    assert after_removal.outcome is Outcome.OK and after_removal.carried == 0
    # Still there by weight but not seen again (hidden, or seen as something else): nothing is carried.
    unseen = decide([box(YOGURT), box(CORN_FLAKES, at=100)], products, RULES, weight_g=893.0, weight_change_g=542.0,
                    on_platter=platter)
    assert unseen.carried == 0 and unseen.outcome is Outcome.WEIGHT_MISMATCH
    # Only the basket on the platter seen, and the weight rose: something new was not seen.
    nothing_new = decide([box(COLA)], products, RULES, weight_g=511.0, weight_change_g=160.0, on_platter=platter)
    assert nothing_new.outcome is Outcome.NO_READ and "besides the basket already charged" in nothing_new.reason
    assert decide([box(COLA)], products, RULES, 340.0, 340.0).platter_after(340.0) == Platter((COLA,), 340.0)
    assert unseen.platter_after(893.0) is None  # an uncharged basket leaves nothing to rely on


def test_a_match_that_an_unsure_box_would_not_spoil_is_not_charged(products):
    """A light pack the detector was unsure of, beside a heavy one or beside produce: the weight
    fits with it and without it, so it cannot tell; a spurious box the weight rules out is ignored."""
    tea = Detection(0, "product", 0.2, (300.0, 300.0, 380.0, 350.0), ("8711240012341", 0.97))  # 45 g
    cola = Detection(0, "product", 0.9, (10.0, 10.0, 80.0, 80.0), (COLA, 0.99))
    water = Detection(0, "product", 0.9, (10.0, 10.0, 100.0, 100.0), ("7613030001157", 0.99))  # 1540 g
    cucumber = Detection(0, "product", 0.9, (10.0, 100.0, 220.0, 160.0), ("4062", 0.99))
    assert decide([cola], products, RULES, 352.0, 352.0, unsure=[tea]).outcome is Outcome.OK  # 395 g would not fit
    heavy = decide([water], products, RULES, 1541.0, 1541.0, unsure=[tea])
    assert heavy.outcome is Outcome.UNKNOWN_ITEM and heavy.total_cents is None
    assert "may be on the scale: the weight fits with it and without it" in heavy.reason
    produce = decide([cucumber], products, RULES, 320.0, 320.0, unsure=[tea])
    assert produce.outcome is Outcome.WEIGH_SEPARATELY and "may be on the scale too" in produce.reason
    assert decide([cucumber], products, RULES, 320.0, 320.0).outcome is Outcome.OK
