"""Checkout lines in the config: the example is valid, its mistakes name file, line and field, and
`edge-agent run` turns a missing product database into a one-line error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from tests.test_config import _write, assert_error_at

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "provisioning" / "checkout.example.yaml"


def test_the_example_is_valid():
    config = load_config(EXAMPLE)
    line = config.lines["checkout"]
    assert line.type == "checkout" and line.classifier == "products" and line.min_probability == 0.8
    assert [m.type for m in line.trigger.members] == ["motion", "scale"]
    assert line.webhooks[0].on == ["ok", "no_read", "unknown_item", "weigh_separately", "no_weight", "weight_mismatch"]
    assert config.plc is None and config.catalog.path == Path("/var/lib/edge-agent/catalog.db")


def test_a_relative_catalog_path_is_relative_to_the_config_file(tmp_path):
    text = EXAMPLE.read_text().replace("path: /var/lib/edge-agent/catalog.db", "path: catalog.db")
    text = text.replace("../models/", str(REPO / "models") + "/")
    assert load_config(_write(tmp_path, text)).catalog.path == tmp_path / "catalog.db"


@pytest.mark.parametrize("old, new, needle, expected", [
    ("    classifier: products", "    classifier: skus", "classifier: skus", "lines.checkout.classifier: no model named 'skus'"),
    ("          direction: increase", "          direction: any", "direction: any",
     "lines.checkout.trigger.members.1.direction: a checkout line charges what is put down"),
    ("        # on: [ok", "        on: [pass]\n        # on: [ok", "on: [pass]", "lines.checkout.webhooks.0.on.0: input should be 'ok'"),
    ("    min_probability: 0.8 ", "    min_probability: 1.5 ", "min_probability", "lines.checkout.min_probability"),
    ("      tolerance_g: 10", "      tolerance_g: 10\n      tolerance_kg: 1", "tolerance_kg", "lines.checkout.weight.tolerance_kg: unknown key"),
])
def test_checkout_mistakes_name_file_line_and_field(tmp_path, old, new, needle, expected):
    assert_error_at(tmp_path, EXAMPLE, old, new, needle, expected)


def test_a_checkout_line_needs_the_factory_product_database(tmp_path):
    text = EXAMPLE.read_text()
    start, end = text.index("catalog:\n"), text.index("cameras:\n")
    with pytest.raises(ConfigError, match="lines.checkout: a checkout line needs the factory product database: "
                                          "add catalog.path"):
        load_config(_write(tmp_path, text[:start] + text[end:]))


def test_a_checkout_line_needs_a_scale_in_its_trigger(tmp_path):
    text = EXAMPLE.read_text()
    start, end = text.index("    trigger:\n"), text.index("    default_threshold")
    text = text[:start] + "    trigger: {type: motion}\n" + text[end:]
    with pytest.raises(ConfigError, match="lines.checkout.trigger: a checkout line needs a scale trigger"):
        load_config(_write(tmp_path, text))


def test_run_without_the_product_database_is_a_one_line_error(tmp_path):
    text = EXAMPLE.read_text().replace("/var/lib/edge-agent/catalog.db", str(tmp_path / "missing.db"))
    text = text.replace("../models/", str(REPO / "models") + "/").replace("/var/lib/edge-agent/outbox.db",
                                                                        str(tmp_path / "outbox.db"))
    path = _write(tmp_path, text)
    result = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"product database {tmp_path / 'missing.db'}: no such file"]
