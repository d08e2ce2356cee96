"""Trigger combinations: all_of within a window and any_of, nested, with GPIO members on
gpiozero's MockFactory; checkout = motion on hw_sim checkout frames AND a settled weight on a
simulated scale over a real pty, carrying the weight; and a combination built from the config by
the App, with a PLC member and burst capture."""

from __future__ import annotations

import time

import cv2
import pytest
import yaml
from gpiozero.pins.mock import MockFactory

from agent.gpio import EdgeInput
from agent.ingest.composite_trigger import CompositeTrigger
from agent.ingest.motion import MotionDetector, MotionTrigger
from agent.ingest.scale import ScaleTrigger
from agent.ingest.sources import LiveSource, folder_opener
from agent.serial_port import SerialPort
from hw_sim.checkout_scene import CheckoutRenderer
from hw_sim.products import by_sku
from hw_sim.scale import SimScale
from tests.helpers import FireRecorder, wait_until

pytestmark = pytest.mark.timeout(90)

CORN_FLAKES = "5000159012348"  # 540 g


def edge(factory: MockFactory, pin: int) -> None:
    factory.pin(pin).drive_high()
    factory.pin(pin).drive_low()


def gpio_combination(factory, mode: str, pins, on_fire, **options) -> CompositeTrigger:
    combination = CompositeTrigger(mode, len(pins), on_fire, **options)
    combination.attach([EdgeInput(pin, factory, combination.member_input(i), debounce_s=0.001)
                        for i, pin in enumerate(pins)])
    return combination


def test_all_of_fires_once_when_every_member_fired_within_the_window():
    factory, fires = MockFactory(), FireRecorder()
    both = gpio_combination(factory, "all_of", (17, 22), fires, window_s=0.3)
    try:
        edge(factory, 17)
        time.sleep(0.05)
        assert fires.calls == []  # one member is not enough
        edge(factory, 22)
        assert len(fires.calls) == 1
        time.sleep(0.01)  # past the sensor's debounce
        edge(factory, 22)  # the pair was used up: a new pair is needed
        assert len(fires.calls) == 1
        time.sleep(0.4)  # 22 waited longer than the window
        edge(factory, 17)
        assert len(fires.calls) == 1
        edge(factory, 22)  # in either order
        assert len(fires.calls) == 2
        stats = both.stats()
    finally:
        both.close()
    assert stats["type"] == "all_of" and stats["fires"] == 2 and stats["unmatched"] == 1 and stats["waiting"] == 0
    assert [m["type"] for m in stats["members"]] == ["gpio", "gpio"]
    assert [m["fires_seen"] for m in stats["members"]] == [2, 3]


def test_any_of_fires_for_each_member_and_its_cooldown_merges_two_sensors_on_one_part():
    factory, fires = MockFactory(), FireRecorder()
    either = gpio_combination(factory, "any_of", (5, 6), fires, cooldown_s=0.1)
    try:
        edge(factory, 5)
        edge(factory, 6)  # the second sensor sees the same part a moment later
        time.sleep(0.15)
        edge(factory, 6)
        stats = either.stats()
    finally:
        either.close()
    assert len(fires.calls) == 2 and stats["cooldown_suppressed"] == 1


def test_nested_combinations_any_of_all_of():
    factory, fires = MockFactory(), FireRecorder()
    outer = CompositeTrigger("any_of", 2, fires)
    inner = CompositeTrigger("all_of", 2, outer.member_input(0), window_s=0.5)
    inner.attach([EdgeInput(pin, factory, inner.member_input(i), debounce_s=0.001) for i, pin in enumerate((17, 22))])
    outer.attach([inner, EdgeInput(27, factory, outer.member_input(1), debounce_s=0.001)])
    try:
        edge(factory, 17)
        assert fires.calls == []
        edge(factory, 22)  # the inner pair completes
        edge(factory, 27)  # the override alone
        stats = outer.stats()
    finally:
        outer.close()
    assert len(fires.calls) == 2
    assert stats["members"][0]["type"] == "all_of" and stats["members"][0]["members"][1]["edges"] == 1
    assert pytest.raises(ValueError, CompositeTrigger, "all_of", 2, fires)  # all_of needs a window


@pytest.fixture(scope="module")
def checkout_frames():
    renderer = CheckoutRenderer(seed=3)
    scene = renderer.render([by_sku(CORN_FLAKES).sku])  # a big box: a lemon changes under 1% of the picture
    empty = [renderer.render_empty() for _ in range(75)]  # 5 s at 15 fps, under the scene's light
    return empty, scene.image


def test_checkout_fires_on_motion_and_a_settled_weight_and_carries_the_weight(tmp_path, checkout_frames):
    """5 s of the empty platter, then a product put down. A weight that settles without motion
    (someone leans on the scale) and motion without a weight change do not fire."""
    empty, product = checkout_frames
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, image in enumerate(empty + [product] * 60):
        cv2.imwrite(str(folder / f"{i:04d}.png"), image)
    fires = FireRecorder()
    scale_sim = SimScale(tmp_path / "scale", protocol="mtsics", settle_s=0.3)
    scale_sim.start()
    source = LiveSource("cam", folder_opener(folder, fps=15, loop=False), "folder")
    source.start()
    checkout = CompositeTrigger("all_of", 2, fires, window_s=2.0, name="checkout")
    members = [
        MotionTrigger(source, MotionDetector(), checkout.member_input(0), cooldown_s=1.0),
        ScaleTrigger(SerialPort(str(scale_sim.link), timeout_s=0.05), "mtsics", checkout.member_input(1),
                     threshold_g=5.0, poll_interval_s=0.05, reply_timeout_s=0.3),
    ]
    checkout.attach(members)
    try:
        assert wait_until(lambda: members[1].stats()["reference_g"] is not None, 5), members[1].stats()
        scale_sim.place(35.0)  # the scale alone, on the empty platter
        assert wait_until(lambda: checkout.stats()["members"][1]["fires_seen"] == 1, 3), checkout.stats()
        assert wait_until(lambda: checkout.stats()["members"][0]["fires_seen"] == 1, 10), checkout.stats()
        motion_seen = time.monotonic()
        time.sleep(0.1)
        assert fires.calls == [], "motion came more than the window after the weight: no fire"
        scale_sim.place(35.0 + by_sku(CORN_FLAKES).weight_g)  # the product lands on the platter
        assert wait_until(lambda: fires.calls, 3), checkout.stats()
        stats = checkout.stats()
    finally:
        checkout.close()
        source.close()
        scale_sim.stop()
    (fire,) = fires.calls
    assert fire["weight_g"] == pytest.approx(575.0)
    assert fire["weight_change_g"] == pytest.approx(540.0)  # what was put down: the box alone
    assert fire["t"] - motion_seen < 2.0
    assert stats["fires"] == 1 and stats["unmatched"] == 1  # the lone weight at the start
    motion, scale = stats["members"]
    assert motion["type"] == "motion" and motion["fires"] == 1 and scale["type"] == "scale" and scale["fires"] == 2


@pytest.mark.timeout(120)
def test_app_builds_a_combination_with_a_plc_member_and_a_burst_from_the_config(tmp_path, broker):
    """all_of(gpio, plc): a sensor edge confirmed by the PLC's part signal; the result echoes the
    PLC's trigger id; the event names the combination, carries the id and the burst."""
    from agent.app import App
    from agent.config import load_config
    from hw_sim.camera import SimCamera, encode_jpeg
    from hw_sim.plc import SimPlc
    from hw_sim.scene import PartRenderer
    from hw_sim.subscriber import MqttRecorder
    from tests.tiny_ir import save_tiny_detector

    image = PartRenderer(seed=2).render().image
    stills = [encode_jpeg(cv2.GaussianBlur(image, (0, 0), s)) for s in (3.0, 1.0)] + [encode_jpeg(image)]
    pins = MockFactory()
    with SimPlc(first_trigger_id=4242) as sim, SimCamera() as camera, \
            MqttRecorder(broker.host, broker.port, "edge/box/events/#") as recorder:
        config = {
            "device": {"id": "box"},
            "mqtt": {"host": broker.host, "port": broker.port},
            "outbox": {"path": str(tmp_path / "outbox.db")},
            "plc": {"host": "127.0.0.1", "port": sim.port},
            "gpio": {"pin_factory": "mock"},
            "models": {"tiny": {"path": str(save_tiny_detector(tmp_path / "tiny"))}},
            "cameras": {"cam0": {"type": "http_snapshot", "url": camera.url}},
            "lines": {"inspect": {
                "camera": "cam0", "model": "tiny",
                "trigger": {"type": "all_of", "window_ms": 500, "members": [
                    {"type": "gpio", "pin": 17}, {"type": "plc", "poll_ms": 5}]},
                "burst": {"frames": 3},
            }},
            "control": {"enabled": False},
        }
        path = tmp_path / "agent.yaml"
        path.write_text(yaml.safe_dump(config))
        app = App(load_config(path), pin_factory=pins)
        app.start()
        try:
            assert wait_until(lambda: app.health()["triggers"]["inspect"]["members"][1]["state"] == "polling", 5)
            camera.show_sequence(stills)
            edge(pins, 17)
            sim.present_part()
            (result,) = sim.wait_for_results(1, 5.0)
            assert wait_until(lambda: recorder.messages("edge/box/events/inspect"), 5)
            event = recorder.messages("edge/box/events/inspect")[0].json()
            health = app.health()["triggers"]["inspect"]
        finally:
            app.stop()
    assert result.inspection_id == 4242 and result.trigger_id == 4242
    assert event["inspection_id"] == 4242 and event["trigger"]["plc_trigger_id"] == 4242
    assert event["trigger"]["source"] == "all_of(gpio,plc)" and event["trigger"]["seq"] == 1
    assert event["frame"]["burst"]["requested"] == 3 and event["frame"]["burst"]["chosen"] == 2
    assert health["fires"] == 1 and [m["type"] for m in health["members"]] == ["gpio", "plc"]


def _config_with_trigger(tmp_path, trigger: str):
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "provisioning" / "inspection.example.yaml"
    text = example.read_text().replace("../models/", str(example.parent.parent / "models") + "/")
    start, end = text.index("    trigger:\n"), text.index("    default_threshold")
    path = tmp_path / "config.yaml"
    path.write_text(text[:start] + trigger + text[end:])
    return path


CHECKOUT = """    trigger:
      type: all_of
      window_ms: 1500
      members:
        - type: motion
          camera: CAMERA
        - type: any_of
          members:
            - {type: scale, port: /dev/ttyUSB0, protocol: PROTOCOL}
            - {type: gpio, pin: 22}
"""


def test_config_takes_nested_combinations_and_names_errors_inside_them(tmp_path):
    from agent.config import ConfigError, load_config

    config = load_config(_config_with_trigger(tmp_path, CHECKOUT.replace("CAMERA", "cam0").replace("PROTOCOL", "mtsics")))
    trigger = config.lines["inspect"].trigger
    assert trigger.type == "all_of" and trigger.window_ms == 1500
    assert [m.type for m in trigger.members] == ["motion", "any_of"]
    assert [m.type for m in trigger.members[1].members] == ["scale", "gpio"]

    with pytest.raises(ConfigError) as info:
        load_config(_config_with_trigger(tmp_path, CHECKOUT.replace("CAMERA", "cam0").replace("PROTOCOL", "sics")))
    message = str(info.value)
    assert "config.yaml:" in message and "lines.inspect.trigger.members.1.members.0.protocol: input should be" in message
    with pytest.raises(ConfigError) as info:
        load_config(_config_with_trigger(tmp_path, CHECKOUT.replace("CAMERA", "nope").replace("PROTOCOL", "mtsics")))
    assert "lines.inspect.trigger.members.0.camera: no camera named 'nope'" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config(_config_with_trigger(tmp_path, "    trigger:\n      type: any_of\n      members:\n"
                                                   "        - {type: gpio, pin: 17}\n"))
    assert "lines.inspect.trigger.members: list should have at least 2 items" in str(info.value)
