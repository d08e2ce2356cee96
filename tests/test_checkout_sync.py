"""The checkout line takes a new product database with its models from the nightly sync, between
two baskets, and a rollback brings back the factory ones: prices follow the active bundle."""

from __future__ import annotations

import dataclasses
import time

import pytest

from bundles import signing_key, sync_section
from hw_sim.checkout_cell import CLASSIFIER, DETECTOR, LINE, CheckoutCell, CheckoutSettings, basket_of
from hw_sim.cloud import SimCloud
from models.make_bundle import build_bundle, simulator_products

pytestmark = pytest.mark.timeout(300)

COLA = "5000112637922"  # 1.29 in the factory database


def _basket(cell, basket) -> dict:
    seen = cell.arrived("pos")
    since = time.time()
    cell.put_down(basket)
    event, _ = cell.wait_for_result("pos", seen, since)
    cell.take_off(basket.empty)
    time.sleep(cell.settings.gap_s + cell.settings.settle_s)
    assert event is not None, cell.agent.log_tail()
    return event


def test_a_synced_catalog_prices_the_next_basket_and_a_rollback_the_one_after(tmp_path):
    key, public = signing_key(tmp_path)
    repriced = [dataclasses.replace(p, price_cents=149) if p.sku == COLA else p for p in simulator_products()]
    build_bundle(tmp_path / "cloud", 1, key, {"products-detector": DETECTOR, "products": CLASSIFIER}, products=repriced,
                 golden_count=3)
    cola = basket_of([COLA], 26000)
    with SimCloud(tmp_path / "cloud", tls=True) as cloud:
        cloud.publish(1)
        settings = CheckoutSettings(sync=sync_section(cloud, public, trial={"duration_s": 600}))
        with CheckoutCell(settings, workdir=tmp_path / "cell") as cell:
            before = _basket(cell, cola)
            reply = cell.command("sync/now", {"wait_s": 30}, timeout_s=40)
            assert reply["ok"] and reply["data"]["outcome"] == "activated", reply
            synced = _basket(cell, cola)
            health = cell.status()["lines"][LINE]
            reply = cell.command("model/rollback", {"reason": "test"}, timeout_s=30)
            assert reply["ok"], reply
            assert cell.wait_ready()["lines"][LINE]["catalog"]["version"] == "factory"
            after = _basket(cell, cola)
    assert (before["catalog"], before["total_cents"], before["model"]) == ("factory", 129, "products-detector:checkout-detector.xml")
    assert (synced["catalog"], synced["total_cents"], synced["model"]) == ("1", 149, "products-detector:checkout-detector.xml@1")
    assert health["catalog"]["version"] == "1"
    assert (after["catalog"], after["total_cents"]) == ("factory", 129)
