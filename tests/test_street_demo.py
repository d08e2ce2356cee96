"""`edge-agent demo --use-case surveillance`, short: a rendered street clip served live by ffmpeg,
`edge-agent run` with a stream line and analytics, a real mosquitto; the scorecard compares the
alerts that arrived over MQTT with the clip's truth."""

from __future__ import annotations

import re
import subprocess
import sys


def test_surveillance_demo_scores_the_alerts_against_the_clip():
    result = subprocess.run([sys.executable, "-m", "hw_sim.demo", "--use-case", "surveillance", "--seconds", "20"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    card = result.stdout[result.stdout.index("Scorecard"):]
    assert "Traceback" not in result.stderr
    tallies = {m[0]: (int(m[1]), int(m[2]), int(m[3]))
               for m in re.findall(r"(tripwire '\w+'|zone 'centre' enter/exit)\s+(\d+) true, (\d+) alerts, (\d+) matched",
                                   card)}
    assert len(tallies) == 3, card
    truth, found, matched = tallies["zone 'centre' enter/exit"]
    assert truth > 0 and matched >= 0.5 * truth and matched >= 0.5 * found, card
    assert sum(t[2] for name, t in tallies.items() if name.startswith("tripwire")) > 0, card
    assert "edge-agent exit status     0" in card


def test_surveillance_demo_rejects_a_too_short_clip():
    result = subprocess.run([sys.executable, "-m", "hw_sim.demo", "--use-case", "surveillance", "--seconds", "5"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--seconds must be between 20 and 3600" in result.stderr
    assert "Traceback" not in result.stderr
