"""The agent's MQTT link against a real mosquitto and an independent subscriber."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest

from agent.deliver.mqtt import MqttPublisher, MqttSettings
from hw_sim.broker import MosquittoBroker
from hw_sim.subscriber import Received

DEVICE = "cam7"
STATUS = f"edge/{DEVICE}/status"


def settings_for(broker: MosquittoBroker, **overrides) -> MqttSettings:
    return MqttSettings(host=broker.host, port=broker.port, device_id=DEVICE, **overrides)


@pytest.fixture
def make_publisher() -> Iterator:
    made: list[MqttPublisher] = []

    def make(settings: MqttSettings) -> MqttPublisher:
        pub = MqttPublisher(settings, version="9.9.9")
        made.append(pub)
        return pub

    yield make
    for pub in made:
        pub.close(timeout_s=0.5)


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.01)


def statuses(messages: list[Received]) -> list[str]:
    return [m.json()["state"] for m in messages if m.topic == STATUS]


def test_events_and_crops_reach_an_independent_subscriber(broker, recorder, make_publisher):
    rec = recorder(f"edge/{DEVICE}/#")
    pub = make_publisher(settings_for(broker))
    pub.start()

    event = {"id": "e1", "line": "line1", "verdict": "reject", "score": 0.91, "label": "crack ü"}
    pub.publish_event("line1", event)
    pub.publish_crop("line1", "e1", 0, b"\xff\xd8fake-jpeg\xff\xd9", {"label": "crack", "score": 0.91, "w": 64})

    msgs = rec.wait_for(lambda ms: len([m for m in ms if m.topic != STATUS]) >= 2, timeout=5)
    (ev,) = [m for m in msgs if m.topic == f"edge/{DEVICE}/events/line1"]
    assert ev.json() == event
    assert ev.content_type == "application/json"
    assert b", " not in ev.payload and b": " not in ev.payload  # compact JSON
    assert not ev.retain

    (crop,) = [m for m in msgs if m.topic == f"edge/{DEVICE}/crops/line1/e1/0"]
    assert crop.payload == b"\xff\xd8fake-jpeg\xff\xd9"
    assert crop.content_type == "image/jpeg"
    assert crop.user_properties == {"label": "crack", "score": "0.91", "w": "64"}

    wait_until(lambda: pub.stats()["acked"] == 2)
    assert pub.stats() == {"connected": True, "connections": 1, "session": 0, "published": 2, "acked": 2,
                           "dropped": 0, "unacked": 0, "last_error": None}


def test_birth_is_retained_online_and_close_leaves_retained_stopped(broker, recorder, make_publisher):
    pub = make_publisher(settings_for(broker))
    pub.start()
    wait_until(lambda: pub.connected)

    late = recorder(STATUS)  # subscribes after the birth: sees it only because it is retained
    (birth,) = late.wait_for(lambda ms: len(ms) >= 1, timeout=5)
    assert birth.retain
    assert birth.content_type == "application/json"
    body = birth.json()
    assert body["schema"] == 1 and body["state"] == "online" and body["version"] == "9.9.9"
    assert isinstance(body["ts"], float)

    pub.close()
    assert not pub.connected
    later = recorder(STATUS)
    (after,) = later.wait_for(lambda ms: len(ms) >= 1, timeout=5)
    assert after.retain and after.json()["state"] == "stopped"
    assert statuses(late.wait_for(lambda ms: len(ms) >= 2, timeout=5)) == ["online", "stopped"]


def test_broker_down_at_start_then_queued_events_arrive(broker, recorder, make_publisher):
    broker.stop()
    # The first retry comes 0.75-1.5 s (reconnect_min_s less up to half of it in jitter) after
    # the failed first attempt: ample time to restart the broker and subscribe the recorder before it.
    pub = make_publisher(settings_for(broker, reconnect_min_s=1.5, reconnect_max_s=3.0))

    t0 = time.perf_counter()
    pub.start()
    assert time.perf_counter() - t0 < 0.1

    t0 = time.perf_counter()
    for seq in range(100):
        pub.publish_event("line1", {"seq": seq})
    assert time.perf_counter() - t0 < 0.05
    assert not pub.connected
    assert pub.stats()["published"] == 100 and pub.stats()["acked"] == 0

    broker.start()  # same port as before
    rec = recorder(f"edge/{DEVICE}/#")
    msgs = rec.wait_for(lambda ms: sum(m.topic.endswith("/events/line1") for m in ms) >= 100, timeout=10)

    seqs = [m.json()["seq"] for m in msgs if m.topic.endswith("/events/line1")]
    assert seqs == list(range(100))
    assert statuses(msgs)[0] == "online"
    wait_until(lambda: pub.stats()["acked"] == 100)
    assert pub.stats()["dropped"] == 0


def test_queue_cap_drops_and_counts(broker, make_publisher):
    broker.stop()
    pub = make_publisher(settings_for(broker, max_queued=5))
    pub.start()
    for seq in range(12):
        pub.publish_event("line1", {"seq": seq})
    stats = pub.stats()
    assert stats["published"] == 5
    assert stats["dropped"] == 7
    assert "queue full" in stats["last_error"]


def test_link_changes_are_logged_once(broker, make_publisher, caplog):
    caplog.set_level(logging.INFO, logger="agent.deliver.mqtt")
    broker.stop()
    pub = make_publisher(settings_for(broker, reconnect_min_s=0.1, reconnect_max_s=0.2))
    pub.start()
    time.sleep(0.8)  # several failed attempts
    broker.start()
    wait_until(lambda: pub.connected)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot connect" in m for m in messages) == 1
    assert sum("MQTT connected" in m for m in messages) == 1
    assert pub.stats()["last_error"] == f"connect to {broker.host}:{broker.port} failed"


def test_close_with_dead_broker_is_bounded_and_leaves_no_threads(broker, make_publisher):
    before = set(threading.enumerate())
    pub = make_publisher(settings_for(broker, reconnect_min_s=0.5))
    pub.start()
    wait_until(lambda: pub.connected)
    pub.publish_event("line1", {"seq": 0})
    broker.stop()
    wait_until(lambda: not pub.connected)
    pub.publish_event("line1", {"seq": 1})  # queued for a broker that will not return

    t0 = time.monotonic()
    pub.close(timeout_s=1.0)
    assert time.monotonic() - t0 < 1.5
    assert set(threading.enumerate()) - before == set()
    pub.close()  # idempotent


def test_close_with_hung_broker_is_bounded(broker, make_publisher):
    before = set(threading.enumerate())
    pub = make_publisher(settings_for(broker))
    pub.start()
    wait_until(lambda: pub.connected)
    broker.pause()  # connection stays up, nothing is acknowledged any more
    try:
        pub.publish_event("line1", {"seq": 0})
        t0 = time.monotonic()
        pub.close(timeout_s=0.5)
        assert time.monotonic() - t0 < 1.0
        assert set(threading.enumerate()) - before == set()
    finally:
        broker.resume()


def test_publish_after_close_is_dropped_not_raised(broker, make_publisher):
    pub = make_publisher(settings_for(broker))
    pub.start()
    pub.close()
    pub.publish_event("line1", {"seq": 0})
    assert pub.stats()["dropped"] == 1
    assert pub.stats()["last_error"] == "publisher closed"


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"device_id": "a/b"}, "device_id"),
        ({"topic_prefix": "edge/#"}, "topic_prefix"),
        ({"qos": 3}, "qos"),
        ({"tls_cert": "/x.pem"}, "tls_ca"),
    ],
)
def test_settings_reject_bad_values_with_named_field(overrides, fragment):
    with pytest.raises(ValueError, match=fragment):
        MqttSettings(host="localhost", **overrides)


def test_topic_segments_cannot_escape_their_level(broker, make_publisher):
    pub = make_publisher(settings_for(broker))
    with pytest.raises(ValueError, match="line"):
        pub.publish_event("line1/../x", {})
    with pytest.raises(ValueError, match="event_id"):
        pub.publish_crop("line1", "e+1", 0, b"", {})
