"""The shipped inspection detector still meets its card on renders it has never seen.

Loads the committed FP32 and INT8 IRs with OpenVINO (no training) and scores them
on renderer seed 9000, which the build never uses (training 1000+, calibration 2000,
evaluation 3000).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO_ROOT / "models" / "inspection-detector"
FP32_XML = MODEL_DIR / "fp32" / "inspection-detector.xml"
INT8_XML = MODEL_DIR / "int8" / "inspection-detector.xml"
CARD = MODEL_DIR / "card.json"
TEST_SEED = 9000
N_PARTS = 300


def _load_evaluator():
    spec = importlib.util.spec_from_file_location("inspection_evaluate", REPO_ROOT / "models" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results():
    for path in (FP32_XML, INT8_XML, CARD):
        if not path.exists():
            pytest.fail(f"{path} is missing: run .venv/bin/python models/build_inspection.py")
    evaluator = _load_evaluator()
    op_conf = json.loads(CARD.read_text())["operating_threshold"]
    prepared = evaluator.prepare(evaluator.render_parts(TEST_SEED, N_PARTS))
    return {
        name: evaluator.evaluate_detector(xml, TEST_SEED, N_PARTS, op_conf=op_conf, prepared=prepared)
        for name, xml in (("fp32", FP32_XML), ("int8", INT8_XML))
    }


@pytest.mark.timeout(120)
def test_int8_map50(results):
    assert results["int8"]["map50"] >= 0.95, results["int8"]


@pytest.mark.timeout(120)
def test_int8_close_to_fp32(results):
    # 300 parts carry about 160 defects; one defect ranked differently moves AP@0.5 by
    # well under a point. On six 300-part seeds the gap was at most 0.0006.
    assert results["int8"]["map50"] >= results["fp32"]["map50"] - 0.01, (results["fp32"]["map50"],
                                                                          results["int8"]["map50"])


@pytest.mark.timeout(120)
def test_no_critical_part_missed(results):
    r = results["int8"]
    assert r["critical_parts"] > 0
    assert r["critical_missed"] == 0, r


@pytest.mark.timeout(120)
def test_good_parts_rarely_flagged(results):
    r = results["int8"]
    # At most 1% of good parts; with ~100 good parts that allows one.
    assert r["good_flagged"] <= max(1, int(0.01 * r["good_parts"])), r
