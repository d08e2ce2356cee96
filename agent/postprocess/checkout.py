"""The checkout decision: what lies on the scale platter -> a basket to charge, or an attendant.

    product boxes, each classified (label, probability)
      -> one box per product: of two boxes named the same product where one lies mostly inside
         the other, the lower-scoring one is a second box on the same product, and is dropped
      -> identity per box: the classifier's label if its probability is at least min_probability,
         then the product database entry for that label (none: unknown)
      -> what is new: the boxes minus the products of the last charged basket, if the scale says
         that basket is still on the platter (the weight before this change is the one it left)
      -> quantities per sku; price per item, or by weight (the measured weight change)
      -> weight check: the measured change against the new items' nominal weights
      -> the scale and the boxes the detector was unsure of (scoring under its threshold, over
         `unsure_from`, surely named, not a second box on a product already counted):
           a match that would hold with such a box too is not charged: the weight cannot tell
           whether it is there (a light pack beside a heavy one, anything beside produce)
           on a mismatch, such a box counts if with it, and only with it, the weight matches; a
           second box named the same as another goes if without it, and only without it, the
           weight matches. One such answer, or none: no guessing
      -> outcome: `ok` (charge it), or one that sends the basket to an attendant

Never a wrong price charged silently: anything the line cannot be sure of is not `ok`.
Outcomes, checked in this order:

    no_read           no frame, the detector failed, or the weight rose and no new product was seen
    unknown_item      a box whose identity is under min_probability, or has no catalog entry
    weigh_separately  produce sold by weight lies among other new items: its weight is unknown
    no_weight         no weight change with the trigger (e.g. the `trigger` command): nothing to check
    weight_mismatch   the measured change is outside the tolerance of the nominal weights
    ok                charged: every item, its price, and the total

Pure: the catalog lookup is the only thing it calls.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from itertools import combinations
from decimal import ROUND_HALF_UP, Decimal
from enum import Enum
from typing import Protocol

from ..events import Detection


class Outcome(str, Enum):
    OK = "ok"
    NO_READ = "no_read"
    UNKNOWN_ITEM = "unknown_item"
    WEIGH_SEPARATELY = "weigh_separately"
    NO_WEIGHT = "no_weight"
    WEIGHT_MISMATCH = "weight_mismatch"

    @property
    def charges(self) -> bool:
        return self is Outcome.OK


OUTCOMES = tuple(o.value for o in Outcome)


class ProductLookup(Protocol):
    """agent.catalog.Catalog: by the classifier's label."""

    def by_label(self, label: str): ...


@dataclass(frozen=True)
class WeightCheck:
    """|measured change - nominal| may be at most tolerance_g + tolerance_rel x the nominal weight
    of items sold per item + by_weight_tolerance_rel x the nominal weight of produce (loose
    produce varies far more than a packaged good)."""

    tolerance_g: float = 10.0
    tolerance_rel: float = 0.03
    by_weight_tolerance_rel: float = 0.35

    def tolerance(self, per_item_g: float, by_weight_g: float) -> float:
        return self.tolerance_g + self.tolerance_rel * per_item_g + self.by_weight_tolerance_rel * by_weight_g


@dataclass(frozen=True)
class CheckoutRules:
    min_probability: float = 0.8  # the classifier's top probability under this: unknown item
    weight: WeightCheck = WeightCheck()
    # Two boxes named the same product, one with at least this share of its area inside the other,
    # are one product (the lower score goes). Two real ones lying like that lose one: the weight
    # check then sends the basket to an attendant, never a charge. None: keep every box.
    max_box_overlap: float | None = 0.6
    # Boxes scoring from this up to the detector's threshold may count when the weight confirms them
    # (see the module docstring); None: never.
    unsure_from: float | None = 0.1
    max_weight_fixes: int = 2  # boxes added (or second boxes dropped) to make the weight match, at most


@dataclass(frozen=True)
class Platter:
    """What the last charged basket left on the platter, and the weight the scale settled at."""

    skus: tuple[str, ...]
    weight_g: float


@dataclass(frozen=True)
class Item:
    """One product box: its identity (None: unknown) and whether an earlier basket charged it."""

    detection: Detection
    label: str | None  # the classifier's top label
    probability: float | None
    sku: str | None  # the catalog's, None when the box is unknown
    name: str | None
    carried: bool = False  # on the platter from the last charged basket: not charged again
    why_unknown: str | None = None


@dataclass(frozen=True)
class BasketLine:
    sku: str
    name: str
    quantity: int  # boxes seen; for produce, the pieces
    priced_by_weight: bool
    unit_price_cents: int  # per item, or per kg when priced by weight
    weight_g: float | None  # the weight charged, for produce
    line_total_cents: int | None  # None: not computable (produce among other items)


@dataclass(frozen=True)
class WeightResult:
    measured_change_g: float | None
    expected_g: float | None  # the nominal weights of the new items
    tolerance_g: float | None
    within: bool | None  # None: not checked


@dataclass(frozen=True)
class Basket:
    outcome: Outcome
    reason: str
    items: tuple[Item, ...]
    lines: tuple[BasketLine, ...]
    total_cents: int | None  # only when the outcome charges
    currency: str | None
    weight: WeightResult
    carried: int  # items on the platter from the last charged basket
    added_by_weight: int = 0  # unsure boxes counted because the weight confirmed them
    dropped_by_weight: int = 0  # second boxes on a product dropped because the weight confirmed it

    @property
    def charges(self) -> bool:
        return self.outcome.charges

    def platter_after(self, weight_g: float | None) -> Platter | None:
        """What lies on the platter after a charged basket (None when nothing can be relied on)."""
        if not self.charges or weight_g is None:
            return None
        return Platter(tuple(sorted(i.sku for i in self.items)), weight_g)


def price_by_weight(price_per_kg_cents: int, weight_g: float) -> int:
    """Cents for weight_g at a price per kg: the weight to the scale's 0.1 g, rounded half up."""
    grams = Decimal(f"{weight_g:.1f}")
    return int((Decimal(price_per_kg_cents) * grams / 1000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def no_read(reason: str, weight_change_g: float | None = None) -> Basket:
    return Basket(Outcome.NO_READ, reason, (), (), None, None, WeightResult(weight_change_g, None, None, None), 0)


def decide(detections: list[Detection], catalog: ProductLookup | None, rules: CheckoutRules,
           weight_g: float | None = None, weight_change_g: float | None = None,
           on_platter: Platter | None = None, unsure: list[Detection] = ()) -> Basket:
    """The basket for the boxes seen (each with .classification), the settled weight and its change.
    unsure: boxes under the detector's threshold, over rules.unsure_from, classified too."""
    detections = one_box_per_product(detections, rules.max_box_overlap)
    basket = _decide(detections, catalog, rules, weight_g, weight_change_g, on_platter)
    extra = [d for d in one_box_per_product(list(unsure), rules.max_box_overlap)
             if rules.unsure_from is not None and d.score >= rules.unsure_from
             and d.classification is not None and d.classification[1] >= rules.min_probability
             and any(k is d for k in one_box_per_product([*detections, d], rules.max_box_overlap))]
    if basket.outcome is Outcome.OK and weight_change_g is not None:
        return _unless_unsure_fits(basket, detections, extra, catalog, rules, weight_g, weight_change_g, on_platter)
    if basket.outcome is not Outcome.WEIGHT_MISMATCH or basket.weight.expected_g is None or rules.max_weight_fixes < 1:
        return basket
    if weight_change_g > basket.weight.expected_g:  # more on the scale than seen: an unsure box may be it
        fixes = ((list(detections) + list(combo), len(combo), 0) for k in range(1, rules.max_weight_fixes + 1)
                 for combo in combinations(extra, k))
    else:  # less on the scale than seen: a second box on one product may be the extra one
        twice = {label for label, n in Counter(d.classification[0] for d in detections if d.classification).items()
                 if n > 1}
        doubtful = [d for d in detections if d.classification and d.classification[0] in twice]
        fixes = (([d for d in detections if not any(d is g for g in combo)], 0, len(combo))
                 for k in range(1, rules.max_weight_fixes + 1) for combo in combinations(doubtful, k))
    return _weight_fix(basket, fixes, catalog, rules, weight_g, weight_change_g, on_platter)


def _unless_unsure_fits(basket: Basket, detections, extra, catalog, rules, weight_g, weight_change_g,
                        on_platter) -> Basket:
    """basket (charged), unless one of the unsure boxes would fit the weight as well: then the
    weight cannot tell whether that product is there, and the attendant decides."""
    for box in extra:
        alternative = _decide([*detections, box], catalog, rules, weight_g, weight_change_g, on_platter)
        if alternative.outcome is Outcome.WEIGHT_MISMATCH:
            continue  # the weight says it is not there
        name = box.classification[0]
        if alternative.outcome is Outcome.WEIGH_SEPARATELY:
            return replace(alternative, reason=f"{alternative.reason} (a box the detector was unsure of, "
                                               f"{name} at {box.score:.2f}, may be on the scale too)")
        return replace(basket, outcome=Outcome.UNKNOWN_ITEM, total_cents=None,
                       reason=f"a box the detector was unsure of ({name} at {box.score:.2f}) may be on the scale: "
                              f"the weight fits with it and without it")
    return basket


def _weight_fix(basket: Basket, fixes, catalog, rules, weight_g, weight_change_g, on_platter) -> Basket:
    """The one charge the candidate box sets agree on, with the fewest changes; else basket as it was."""
    found: dict[tuple, Basket] = {}
    fewest = None
    for boxes, added, dropped in fixes:
        if fewest is not None and added + dropped > fewest:
            break
        fixed = _decide(boxes, catalog, rules, weight_g, weight_change_g, on_platter)
        if fixed.outcome is Outcome.OK:
            fewest = added + dropped
            key = tuple(sorted((line.sku, line.quantity) for line in fixed.lines))
            found[key] = replace(fixed, added_by_weight=added, dropped_by_weight=dropped)
    if len(found) != 1:
        return basket  # no answer, or several: the attendant decides
    (fixed,) = found.values()
    how = (f"the weight confirmed {fixed.added_by_weight} box(es) the detector was unsure of" if fixed.added_by_weight
           else f"the weight showed {fixed.dropped_by_weight} box(es) to be a second box on a product")
    return replace(fixed, reason=f"{fixed.reason} ({how})")


def _decide(detections: list[Detection], catalog: ProductLookup | None, rules: CheckoutRules,
            weight_g: float | None, weight_change_g: float | None, on_platter: Platter | None) -> Basket:
    items, products = _identify(detections, catalog, rules)
    carried = _carried(items, on_platter, weight_g, weight_change_g, rules.weight)
    if carried:
        left = Counter(carried)
        marked = []
        for item in items:
            if item.sku is not None and left[item.sku] > 0:
                left[item.sku] -= 1
                item = replace(item, carried=True)
            marked.append(item)
        items = marked
    new = [item for item in items if not item.carried]
    measured = WeightResult(weight_change_g, None, None, None)
    unknown = [item for item in new if item.sku is None]

    def basket(outcome: Outcome, reason: str, lines=(), weight=measured) -> Basket:
        currency = next(iter({products[i.sku].currency for i in new if i.sku is not None}), None)
        return Basket(outcome, reason, tuple(items), tuple(lines), None, currency, weight, len(carried))

    if not new:
        what = "no product was seen" if not items else "no product was seen besides the basket already charged"
        change = f"the weight rose by {weight_change_g:.0f} g but " if weight_change_g is not None else ""
        return basket(Outcome.NO_READ, change + what)
    if unknown:
        return basket(Outcome.UNKNOWN_ITEM, "; ".join(f"item {items.index(i) + 1}: {i.why_unknown}" for i in unknown))
    currencies = {products[i.sku].currency for i in new}
    if len(currencies) > 1:
        return basket(Outcome.UNKNOWN_ITEM, f"products priced in more than one currency ({', '.join(sorted(currencies))})")
    counts = Counter(i.sku for i in new)
    by_weight = [sku for sku in counts if products[sku].priced_by_weight]
    if by_weight and len(counts) > 1:
        names = ", ".join(products[sku].name for sku in by_weight)
        return basket(Outcome.WEIGH_SEPARATELY, f"{names} is sold by weight: weigh it alone, not with other items",
                      _lines(counts, products, None))
    lines = _lines(counts, products, weight_change_g)
    if weight_change_g is None:
        return basket(Outcome.NO_WEIGHT, "no weight change came with the trigger: nothing to check the items against",
                      lines)
    missing = [products[sku].name for sku in counts if products[sku].weight_g is None and not products[sku].priced_by_weight]
    if missing:
        return basket(Outcome.WEIGHT_MISMATCH, f"no nominal weight for {', '.join(missing)} in the product database: "
                                               "cannot check the weight", lines)
    per_item = sum(products[sku].weight_g * n for sku, n in counts.items() if not products[sku].priced_by_weight)
    produce = sum((products[sku].weight_g or 0.0) * n for sku, n in counts.items() if products[sku].priced_by_weight)
    expected = per_item + produce
    tolerance = rules.weight.tolerance(per_item, produce)
    checkable = per_item > 0 or produce > 0
    within = abs(weight_change_g - expected) <= tolerance if checkable else True
    weight = WeightResult(weight_change_g, round(expected, 1), round(tolerance, 1), within if checkable else None)
    if not within:
        return basket(Outcome.WEIGHT_MISMATCH, f"measured {weight_change_g:.0f} g, the items weigh {expected:.0f} g "
                                               f"(± {tolerance:.0f} g)", lines, weight)
    total = sum(line.line_total_cents for line in lines)
    summary = ", ".join(f"{line.quantity} x {line.name}" if not line.priced_by_weight else
                        f"{line.name} {line.weight_g:.0f} g" for line in lines)
    return Basket(Outcome.OK, summary, tuple(items), tuple(lines), total, currencies.pop(), weight, len(carried))


def one_box_per_product(detections: list[Detection], max_overlap: float | None) -> list[Detection]:
    """The detections without the lower-scoring of two named the same (classification label) of
    which one has max_overlap of its area inside the other; in the order given."""
    if max_overlap is None or len(detections) < 2:
        return list(detections)
    kept: list[Detection] = []
    for d in sorted(detections, key=lambda d: d.score, reverse=True):
        label = d.classification[0] if d.classification else None
        if all(label is None or label != (k.classification[0] if k.classification else None)
               or max(_inside(d.box, k.box), _inside(k.box, d.box)) < max_overlap for k in kept):
            kept.append(d)
    return [d for d in detections if any(d is k for k in kept)]


def _inside(box, other) -> float:
    """The share of box's area that lies inside other."""
    w = min(box[2], other[2]) - max(box[0], other[0])
    h = min(box[3], other[3]) - max(box[1], other[1])
    area = (box[2] - box[0]) * (box[3] - box[1])
    return max(0.0, w) * max(0.0, h) / area if area > 0 else 1.0


def _identify(detections: list[Detection], catalog: ProductLookup | None,
              rules: CheckoutRules) -> tuple[list[Item], dict]:
    items, products = [], {}
    for d in detections:
        label, probability = d.classification if d.classification is not None else (None, None)
        product, why = None, None
        if label is None:
            why = "not classified"
        elif probability < rules.min_probability:
            why = f"{label} at probability {probability:.2f}, under {rules.min_probability:.2f}"
        elif catalog is None:
            why = f"{label}: no product database"
        else:
            product = catalog.by_label(label)
            if product is None:
                why = f"{label} is not in the product database"
        if product is not None:
            products[product.sku] = product
        items.append(Item(d, label, probability, product.sku if product else None, product.name if product else None,
                          why_unknown=why))
    return items, products


def _carried(items: list[Item], on_platter: Platter | None, weight_g: float | None,
             weight_change_g: float | None, check: WeightCheck) -> tuple[str, ...]:
    """The skus of the last charged basket if it is still on the platter and seen again, else ()."""
    if on_platter is None or weight_g is None or weight_change_g is None:
        return ()
    if abs((weight_g - weight_change_g) - on_platter.weight_g) > check.tolerance_g:
        return ()  # the scale settled lower in between: that basket was taken off
    seen = Counter(i.sku for i in items if i.sku is not None)
    if Counter(on_platter.skus) - seen:
        return ()  # not all of it is seen again: count everything, and let the weight check judge
    return on_platter.skus


def _lines(counts: Counter, products: dict, weight_change_g: float | None) -> list[BasketLine]:
    lines = []
    for sku, quantity in counts.items():
        p = products[sku]
        if p.priced_by_weight:
            alone = len(counts) == 1 and weight_change_g is not None
            weight = round(weight_change_g, 1) if alone else None
            total = price_by_weight(p.price_cents, weight_change_g) if alone else None
        else:
            weight, total = None, p.price_cents * quantity
        lines.append(BasketLine(sku, p.name, quantity, p.priced_by_weight, p.price_cents, weight, total))
    return lines
