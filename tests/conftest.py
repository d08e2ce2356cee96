"""Shared fixtures: real local components, always stopped afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from hw_sim.broker import MosquittoBroker
from hw_sim.subscriber import MqttRecorder


@pytest.fixture
def broker(tmp_path) -> Iterator[MosquittoBroker]:
    """A running mosquitto on a free loopback port. Tests may stop()/start() it."""
    mosquitto = MosquittoBroker(workdir=tmp_path / "mosquitto")
    mosquitto.start()
    try:
        yield mosquitto
    finally:
        mosquitto.stop()


@pytest.fixture
def recorder(broker: MosquittoBroker) -> Iterator[Callable[..., MqttRecorder]]:
    """Factory: recorder(topic_filter="#") -> a started MqttRecorder on `broker`."""
    started: list[MqttRecorder] = []

    def make(topic_filter: str = "#") -> MqttRecorder:
        rec = MqttRecorder(broker.host, broker.port, topic_filter)
        rec.start()
        started.append(rec)
        return rec

    try:
        yield make
    finally:
        for rec in started:
            rec.stop()
