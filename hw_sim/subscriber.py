"""An independent MQTT subscriber that records everything that arrives.

It plays the cloud side in tests: it shares no code with the agent's MQTT
adapter, so a bug there cannot hide itself by being mirrored here.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

log = logging.getLogger(__name__)

_SUBACK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    t_mono: float
    user_properties: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    retain: bool = False
    message_expiry_s: int | None = None  # what is left of the MQTT message expiry on arrival

    def json(self) -> Any:
        return json.loads(self.payload)


class MqttRecorder:
    """Subscribes to topic_filter (MQTT v5, QoS 1) and keeps every message.

    Retain flags are recorded as published (retainAsPublished), so a test can
    tell a retained status message from a live one.

    persistent_session=True asks the broker to keep the subscription and queue
    messages while the recorder is away (clean_start=False, 1 h session expiry).
    """

    def __init__(self, host: str, port: int, topic_filter: str = "#", client_id: str | None = None,
                 persistent_session: bool = False):
        self._host = host
        self._port = port
        self._persistent_session = persistent_session
        self._topic_filter = topic_filter
        self._client_id = client_id or f"hw-sim-recorder-{uuid.uuid4().hex[:8]}"
        self._received: list[Received] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._sub_error: str | None = None
        self._client: mqtt.Client | None = None

    @property
    def topic_filter(self) -> str:
        return self._topic_filter

    def start(self) -> None:
        """Connect and subscribe; returns once the broker has acknowledged the subscription."""
        if self._client is not None:
            return
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=mqtt.MQTTv5,
        )
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        # Comes back quickly after a broker restart in outage tests.
        client.reconnect_delay_set(min_delay=0.1, max_delay=1)  # type: ignore[arg-type]
        self._subscribed.clear()
        self._sub_error = None
        self._client = client
        if self._persistent_session:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
            client.connect_async(self._host, self._port, keepalive=30, clean_start=False, properties=props)
        else:
            client.connect_async(self._host, self._port, keepalive=30)
        client.loop_start()
        if not self._subscribed.wait(_SUBACK_TIMEOUT_S) or self._sub_error:
            why = self._sub_error or f"no SUBACK within {_SUBACK_TIMEOUT_S:.0f} s"
            self.stop()
            raise TimeoutError(
                f"recorder could not subscribe to {self._topic_filter!r} on {self._host}:{self._port}: {why}"
            )

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        client.disconnect()
        client.loop_stop()
        # paho only closes its wake-up socket pair on garbage collection; close it now
        # so a stopped recorder leaves no file descriptors behind.
        client._reset_sockets()  # noqa: SLF001

    def messages(self, topic_prefix: str | None = None) -> list[Received]:
        with self._cond:
            snapshot = list(self._received)
        if topic_prefix is None:
            return snapshot
        return [m for m in snapshot if m.topic.startswith(topic_prefix)]

    def clear(self) -> None:
        with self._cond:
            self._received.clear()

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float) -> list[Received]:
        """Block until predicate(snapshot) is true; returns that snapshot.

        Raises TimeoutError with a summary of what did arrive otherwise.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                snapshot = list(self._received)
                if predicate(snapshot):
                    return snapshot
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
        raise TimeoutError(f"condition not met within {timeout:g} s; {self._summary(snapshot)}")

    def _summary(self, snapshot: list[Received]) -> str:
        if not snapshot:
            return f"nothing arrived on {self._topic_filter!r} at {self._host}:{self._port}"
        counts = Counter(m.topic for m in snapshot)
        listed = ", ".join(f"{topic} x{n}" for topic, n in counts.most_common(15))
        more = f" (+{len(counts) - 15} more topics)" if len(counts) > 15 else ""
        return f"{len(snapshot)} messages arrived: {listed}{more}"

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._sub_error = f"broker refused the connection: {reason_code}"
            self._subscribed.set()
            return
        # Subscribe on every connect: the broker keeps no session across its restarts.
        options = SubscribeOptions(qos=1, retainAsPublished=True)
        client.subscribe(self._topic_filter, options=options)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        failures = [str(rc) for rc in reason_codes if rc.is_failure]
        if failures:
            self._sub_error = f"subscription refused: {', '.join(failures)}"
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        props = message.properties
        user_properties = dict(getattr(props, "UserProperty", None) or [])
        content_type = getattr(props, "ContentType", None)
        received = Received(
            topic=message.topic,
            payload=bytes(message.payload),
            t_mono=time.monotonic(),
            user_properties=user_properties,
            content_type=content_type,
            retain=bool(message.retain),
            message_expiry_s=getattr(props, "MessageExpiryInterval", None),
        )
        with self._cond:
            self._received.append(received)
            self._cond.notify_all()

    def __enter__(self) -> MqttRecorder:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
