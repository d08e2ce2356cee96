"""The checkout decision on many held-out renders, without the transport: what the line would
decide for each basket, against the ground truth. For thresholds and the benchmark's larger
sample; the cell (hw_sim/checkout_cell.py) measures the same decision end to end.

    .venv/bin/python -m hw_sim.checkout_eval [--baskets 2000] [--seed 25000] [--threshold 0.5] [--min-probability 0.85]

Runs the shipped INT8 detector and classifier through the agent's own Detector, Classifier and
Cascade on the rendered frame (decoded from the same JPEG the camera would serve), then
agent.postprocess.checkout.decide with the product database built from hw_sim.products and the
basket's real weight. Also prints, for calibration, how the detector's scores and the classifier's
probabilities of right and wrong boxes are spread.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from agent.catalog import Catalog
from agent.infer.cascade import Cascade
from agent.infer.engine import Classifier, Detector
from agent.postprocess.checkout import CheckoutRules, decide

from .checkout_cell import CLASSIFIER, DETECTOR, Basket, make_baskets
from .products import write_catalog

CALIBRATION_SEED = 25000  # for choosing thresholds; the benchmark and the tests use others


@dataclass
class Evaluation:
    baskets: int
    correct: int
    strict: int  # the attendant's product lists right too
    charged_wrong: int
    outcomes: Counter  # got
    expected: Counter
    wrong: list  # (basket, result, reason) of the baskets decided wrong
    probabilities_right: list[float]  # the classifier's top probability on boxes it named right
    probabilities_wrong: list[float]
    scores_matched: list[float]  # the detector's score of boxes on a product (IoU >= 0.5)
    scores_spurious: list[float]  # ... of boxes on no product
    decide_ms: list[float]
    weight_resolved: int = 0  # baskets the weight settled (an unsure box counted, a second box dropped)

    @property
    def accuracy(self) -> float:
        return self.correct / self.baskets if self.baskets else float("nan")


def _iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def evaluate(baskets: list[Basket], threshold: float, rules: CheckoutRules, floor: float = 0.05) -> Evaluation:
    """floor: the detector runs at this score so the spread under the threshold is seen too."""
    detector = Detector(DETECTOR)
    cascade = Cascade(Classifier(CLASSIFIER))
    with tempfile.TemporaryDirectory(prefix="checkout-eval-") as tmp:
        write_catalog(Path(tmp) / "catalog.db")
        catalog = Catalog(Path(tmp) / "catalog.db")
        try:
            return _evaluate(baskets, detector, cascade, catalog, threshold, rules, floor)
        finally:
            catalog.close()


def _evaluate(baskets, detector, cascade, catalog, threshold, rules, floor) -> Evaluation:
    from .checkout_cell import BasketResult

    ev = Evaluation(len(baskets), 0, 0, 0, Counter(), Counter(), [], [], [], [], [], [])
    for basket in baskets:
        image = cv2.imdecode(np.frombuffer(basket.jpeg, np.uint8), cv2.IMREAD_COLOR)
        started = time.perf_counter()
        found = cascade.classify(image, detector.detect(image, floor))
        truth = basket.truth_boxes
        for d in found:
            best = max(range(len(truth)), key=lambda i: _iou(d.box, truth[i]), default=None)
            on_product = best is not None and _iou(d.box, truth[best]) >= 0.5
            (ev.scores_matched if on_product else ev.scores_spurious).append(d.score)
            if on_product and d.score >= threshold:
                right = d.classification[0] == basket.skus[best]
                (ev.probabilities_right if right else ev.probabilities_wrong).append(d.classification[1])
        kept = [d for d in found if d.score >= threshold]
        unsure = [d for d in found if d.score < threshold]
        result = decide(kept, catalog, rules, basket.weight_g, basket.weight_g, unsure=unsure)
        ev.weight_resolved += bool(result.added_by_weight or result.dropped_by_weight)
        ev.decide_ms.append((time.perf_counter() - started) * 1000)
        event = {"result": result.outcome.value, "action": "charge" if result.charges else "attendant",
                 "items": [{"sku": line.sku, "quantity": line.quantity} for line in result.lines],
                 "total_cents": result.total_cents}
        scored = BasketResult(basket, event, 1, 0.0, None)
        ev.correct += scored.correct
        ev.strict += scored.strict
        ev.charged_wrong += scored.charged_wrong
        ev.outcomes[event["result"]] += 1
        ev.expected[basket.expected()[0]] += 1
        if not scored.strict:
            ev.wrong.append((basket, event["result"], result.reason))
    return ev


def _quantiles(values: list[float]) -> str:
    if not values:
        return "none"
    q = np.quantile(values, [0.0, 0.001, 0.01, 0.05, 0.5])
    return f"n={len(values)}  min {q[0]:.3f}  0.1% {q[1]:.3f}  1% {q[2]:.3f}  5% {q[3]:.3f}  median {q[4]:.3f}"


def report(ev: Evaluation, threshold: float, rules: CheckoutRules) -> str:
    lines = [
        f"baskets {ev.baskets}: decided right {ev.correct} ({100 * ev.accuracy:.2f}%), charged wrong {ev.charged_wrong}; "
        f"with the attendant's product lists right too {ev.strict} ({100 * ev.strict / ev.baskets:.2f}%)",
        f"  detector threshold {threshold}, min_probability {rules.min_probability}, "
        f"max_box_overlap {rules.max_box_overlap}",
        "  results: " + ", ".join(f"{k} {v}" for k, v in sorted(ev.outcomes.items()))
        + "   (expected: " + ", ".join(f"{k} {v}" for k, v in sorted(ev.expected.items())) + ")",
        f"  detect + classify + decide per basket: median {np.median(ev.decide_ms):.1f} ms; "
        f"{ev.weight_resolved} baskets settled by the weight",
        f"  detector score, boxes on a product:  {_quantiles(ev.scores_matched)}",
        f"  detector score, boxes on no product: n={len(ev.scores_spurious)}, the highest: "
        + ", ".join(f"{v:.3f}" for v in sorted(ev.scores_spurious, reverse=True)[:8]),
        f"  classifier probability, named right: {_quantiles(ev.probabilities_right)}",
        f"  classifier probability, named wrong: {_quantiles(ev.probabilities_wrong)}"
        + (f"  max {max(ev.probabilities_wrong):.3f}" if ev.probabilities_wrong else ""),
        "  named right under a min_probability of: " + ", ".join(
            f"{t}: {sum(p < t for p in ev.probabilities_right)}" for t in (0.5, 0.6, 0.7, 0.8, 0.85, 0.9)),
    ]
    def kind(basket: Basket, result: str) -> str:
        expected = basket.expected()[0]
        if result == "ok":
            return "CHARGED WRONG"
        if expected == "ok":
            return "attendant, not needed"
        return "attendant, another reason" if result != expected else "attendant, products listed wrong"

    for name in ("CHARGED WRONG", "attendant, not needed", "attendant, another reason", "attendant, products listed wrong"):
        shown = [w for w in ev.wrong if kind(w[0], w[1]) == name]
        if shown:
            lines.append(f"  {name}: {len(shown)}")
        for basket, result, reason in shown[:12]:
            lines.append(f"    basket {basket.index} {list(basket.skus)} -> {result}: {reason}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hw_sim.checkout_eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baskets", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=CALIBRATION_SEED)
    parser.add_argument("--threshold", type=float, default=0.25, help="the detector's (default 0.25, the line's)")
    parser.add_argument("--min-probability", type=float, default=0.8)
    parser.add_argument("--max-box-overlap", type=float, default=0.6, help="0: keep every box")
    parser.add_argument("--unsure-from", type=float, default=0.1, help="0: the weight never settles a box")
    parser.add_argument("--hand-in-frame", action="store_true",
                        help="the renderer's scenes as drawn: a hand over the products in 15%% of them "
                             "(default: the moment after the hand was lifted)")
    args = parser.parse_args(argv)
    rules = CheckoutRules(min_probability=args.min_probability, max_box_overlap=args.max_box_overlap or None,
                          unsure_from=args.unsure_from or None)
    baskets = make_baskets(args.baskets, args.seed, hands=False, lifted=not args.hand_in_frame)
    print(report(evaluate(baskets, args.threshold, rules), args.threshold, rules))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
