"""The agent's MQTT link. The only agent module that imports paho-mqtt.

Topics (prefix and device id from MqttSettings):

    {prefix}/{device}/status                       retained JSON: online / stopped / offline (Last Will)
    {prefix}/{device}/events/{line}                JSON event, content type application/json
    {prefix}/{device}/crops/{line}/{event}/{index} raw JPEG, content type image/jpeg, meta as user properties

Publishing never blocks the caller. While the broker is unreachable paho keeps
QoS>0 messages in memory, capped at max_queued; anything beyond is dropped and
counted. That in-memory queue is not persistence: the outbox is.

Reconnecting is paho's job (connect_async + loop_start + reconnect_delay_set);
this class only observes the link and logs each change of state once.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)

STATUS_SCHEMA = 1
_TOPIC_FORBIDDEN = ("/", "+", "#", "\x00")
# After close()'s own budget, extra time for paho's network thread to notice the
# disconnect. Its reconnect back-off sleeps in slices of up to 1 s.
_THREAD_EXIT_GRACE_S = 0.25


@dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int = 1883
    client_id: str = ""  # "" means edge-agent-{device_id}
    topic_prefix: str = "edge"
    device_id: str = "dev"
    keepalive_s: int = 30
    username: str | None = None
    password: str | None = None
    tls_ca: Path | None = None  # TLS is on when set; the broker's hostname is verified
    tls_cert: Path | None = None
    tls_key: Path | None = None
    qos: int = 1
    max_queued: int = 10000  # 0 means unbounded (not recommended on a device)
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("mqtt.host is empty: set the broker's hostname or IP address")
        if not 0 < self.port < 65536:
            raise ValueError(f"mqtt.port {self.port} is not a TCP port (1-65535)")
        if self.qos not in (0, 1, 2):
            raise ValueError(f"mqtt.qos must be 0, 1 or 2, not {self.qos!r}")
        if self.max_queued < 0:
            raise ValueError(f"mqtt.max_queued must be >= 0, not {self.max_queued}")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ValueError(
                f"mqtt.reconnect_min_s ({self.reconnect_min_s}) must be > 0 and <= "
                f"mqtt.reconnect_max_s ({self.reconnect_max_s})"
            )
        if (self.tls_cert or self.tls_key) and not self.tls_ca:
            raise ValueError("mqtt.tls_cert/tls_key need mqtt.tls_ca: set the CA that signed the broker's certificate")
        if self.password is not None and self.username is None:
            raise ValueError("mqtt.password is set without mqtt.username")
        for name in ("topic_prefix", "device_id"):
            value = getattr(self, name)
            if not value or "+" in value or "#" in value:
                raise ValueError(f"mqtt.{name} {value!r} must be non-empty and contain no MQTT wildcards (+ #)")
        if "/" in self.device_id:
            raise ValueError(f"mqtt.device_id {self.device_id!r} must not contain '/'")

    @property
    def effective_client_id(self) -> str:
        return self.client_id or f"edge-agent-{self.device_id}"

    @property
    def base_topic(self) -> str:
        return f"{self.topic_prefix}/{self.device_id}"

    @property
    def status_topic(self) -> str:
        return f"{self.base_topic}/status"


@dataclass(frozen=True)
class _Pending:
    data: bool  # an event or crop (counted in stats), not a status message
    qos: int


def _topic_segment(kind: str, value: str) -> str:
    text = str(value)
    if not text or any(ch in text for ch in _TOPIC_FORBIDDEN):
        raise ValueError(f"{kind} {value!r} cannot be used in an MQTT topic (empty, or contains / + # or NUL)")
    return text


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


class MqttPublisher:
    """One MQTT connection for one device, from start() to close().

    All public methods are safe to call from any thread and never block on the
    network, except close(), which waits a bounded time for acknowledgements.
    """

    def __init__(self, settings: MqttSettings, version: str = "0.1.0"):
        self._settings = settings
        self._version = version
        self._lock = threading.Condition()
        self._client: mqtt.Client | None = None
        self._loop_thread: threading.Thread | None = None
        self._started = False
        self._closed = False
        self._connected = False
        self._link_state = "idle"  # what we last logged: idle / connected / disconnected / connect_failed / refused
        # Messages handed to paho and not yet acknowledged, by mid. Guarded by _lock.
        self._pending: dict[int, _Pending] = {}
        # mid -> accepted?, for acks that arrived before publish() returned the mid to us.
        self._early_acks: dict[int, bool] = {}
        self._published = 0
        self._acked = 0
        self._dropped = 0
        self._last_error: str | None = None

    # -- lifetime -------------------------------------------------------------

    def start(self) -> None:
        """Begin connecting in the background. Returns at once, whether or not a broker is up."""
        with self._lock:
            if self._started:
                return
            if self._closed:
                raise RuntimeError("MqttPublisher was closed; create a new one")
            self._started = True
        s = self._settings
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=s.effective_client_id,
            protocol=mqtt.MQTTv5,
        )
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls_ca is not None:
            self._configure_tls(client)
        client.max_queued_messages_set(s.max_queued)
        client.reconnect_delay_set(min_delay=s.reconnect_min_s, max_delay=s.reconnect_max_s)  # type: ignore[arg-type]

        will_props = Properties(PacketTypes.WILLMESSAGE)
        will_props.ContentType = "application/json"
        will = {"schema": STATUS_SCHEMA, "state": "offline", "version": self._version}
        client.will_set(s.status_topic, _json_bytes(will), qos=1, retain=True, properties=will_props)

        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish

        self._client = client
        client.connect_async(s.host, s.port, keepalive=s.keepalive_s)
        client.loop_start()
        # Kept so close() can join with a timeout; loop_stop() would wait forever.
        self._loop_thread = client._thread  # noqa: SLF001
        log.info("MQTT publishing to %s:%d as %s under %s/", s.host, s.port, s.effective_client_id, s.base_topic)

    def close(self, timeout_s: float = 2.0) -> None:
        """Say "stopped", wait up to timeout_s for outstanding acks, then disconnect.

        Idempotent. Returns within about timeout_s + 0.5 s even if the broker is gone;
        messages still unacknowledged then are abandoned (the outbox has them).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            client = self._client
            connected = self._connected
        if client is None:
            return
        deadline = time.monotonic() + max(0.0, timeout_s)

        if connected:
            payload = {"schema": STATUS_SCHEMA, "state": "stopped", "version": self._version, "ts": round(time.time(), 3)}
            self._publish(self._settings.status_topic, _json_bytes(payload), "application/json", qos=1, retain=True)
            with self._lock:
                self._lock.wait_for(lambda: not self._pending or not self._connected, deadline - time.monotonic())
                unacked = len(self._pending)
            if unacked:
                log.warning("MQTT closing with %d messages unacknowledged after %.1f s", unacked, timeout_s)

        client.disconnect()
        self._stop_loop_thread(client, deadline)

    def _stop_loop_thread(self, client: mqtt.Client, deadline: float) -> None:
        thread = self._loop_thread
        # What loop_stop() does, minus its unbounded join. Without it a CONNACK racing
        # with disconnect() could keep the loop running.
        client._thread_terminate = True  # noqa: SLF001
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()) + _THREAD_EXIT_GRACE_S)
            if thread.is_alive():
                # Stuck writing to a broker that stopped reading: break the socket so
                # the loop sees the connection fail and exits.
                sock = client.socket()
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
                    except OSError:
                        pass
                thread.join(_THREAD_EXIT_GRACE_S)
            if thread.is_alive():
                log.warning("MQTT network thread did not stop in time; leaving it to exit on its own")
                return
        # The thread is gone: release paho's sockets now rather than at garbage collection.
        client._reset_sockets()  # noqa: SLF001
        with self._lock:
            self._connected = False

    # -- publishing -------------------------------------------------------------

    def publish_event(self, line: str, event: dict) -> None:
        topic = f"{self._settings.base_topic}/events/{_topic_segment('line', line)}"
        self._publish(topic, _json_bytes(event), "application/json", qos=self._settings.qos, data=True)

    def publish_crop(
        self,
        line: str,
        event_id: str,
        index: int,
        jpeg: bytes,
        meta: dict[str, str | int | float],
    ) -> None:
        topic = (
            f"{self._settings.base_topic}/crops/{_topic_segment('line', line)}/"
            f"{_topic_segment('event_id', event_id)}/{int(index)}"
        )
        user_properties = [(str(k), str(v)) for k, v in meta.items()]
        self._publish(topic, bytes(jpeg), "image/jpeg", qos=self._settings.qos, user_properties=user_properties, data=True)

    def _publish(
        self,
        topic: str,
        payload: bytes,
        content_type: str,
        *,
        qos: int,
        retain: bool = False,
        user_properties: list[tuple[str, str]] | None = None,
        data: bool = False,
    ) -> None:
        client = self._client
        if client is None or (self._closed and data):
            # Before start() or after close(): there is no link to queue on.
            self._count_drop(topic, "publisher not started" if client is None else "publisher closed", data)
            return
        props = Properties(PacketTypes.PUBLISH)
        props.ContentType = content_type
        if user_properties:
            props.UserProperty = user_properties
        # Must not hold self._lock here: paho calls on_publish with its own lock held.
        info = client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            self._count_drop(topic, f"send queue full ({self._settings.max_queued} messages)", data)
            return
        if info.rc == mqtt.MQTT_ERR_NO_CONN and qos == 0:
            self._count_drop(topic, "not connected (QoS 0 messages are not queued)", data)
            return
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            # NO_CONN with QoS>0 is fine: paho keeps the message and sends it on reconnect.
            self._count_drop(topic, f"publish failed: {mqtt.error_string(info.rc)}", data)
            return
        with self._lock:
            if data:
                self._published += 1
            accepted = self._early_acks.pop(info.mid, None)
            if accepted is not None:
                self._count_ack(data, accepted)
            else:
                self._pending[info.mid] = _Pending(data=data, qos=qos)

    def _count_drop(self, topic: str, why: str, data: bool = True) -> None:
        with self._lock:
            if data:
                self._dropped += 1
            first = self._last_error != why
            self._last_error = why
        if first:
            log.warning("MQTT dropped a message for %s: %s", topic, why)

    # -- state --------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connected

    def stats(self) -> dict:
        """Counts for health. published/acked/dropped cover events and crops, not status messages."""
        with self._lock:
            return {
                "connected": self._connected,
                "published": self._published,
                "acked": self._acked,
                "dropped": self._dropped,
                "last_error": self._last_error,
            }

    # -- paho callbacks (network thread) ------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        s = self._settings
        if reason_code.is_failure:
            why = f"broker {s.host}:{s.port} refused the connection: {reason_code}"
            self._set_link_state("refused", why, logging.WARNING, connected=False, error=why)
            return
        self._set_link_state("connected", f"MQTT connected to {s.host}:{s.port}", logging.INFO, connected=True)
        birth = {"schema": STATUS_SCHEMA, "state": "online", "version": self._version, "ts": round(time.time(), 3)}
        self._publish(s.status_topic, _json_bytes(birth), "application/json", qos=1, retain=True)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        s = self._settings
        why = f"cannot connect to MQTT broker {s.host}:{s.port}; retrying every {s.reconnect_min_s:g}-{s.reconnect_max_s:g} s"
        self._set_link_state("connect_failed", why, logging.WARNING, connected=False, error=f"connect to {s.host}:{s.port} failed")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        s = self._settings
        if self._closed and not reason_code.is_failure:
            self._set_link_state("idle", f"MQTT disconnected from {s.host}:{s.port}", logging.INFO, connected=False)
            return
        with self._lock:
            # QoS 0 messages not yet written are gone with the connection; paho won't report them.
            lost = [mid for mid, p in self._pending.items() if p.qos == 0]
            for mid in lost:
                if self._pending.pop(mid).data:
                    self._dropped += 1
        # Without a DISCONNECT packet from the broker paho reports "Unspecified error".
        reason = str(reason_code) if flags.is_disconnect_packet_from_server else "connection lost"
        why = f"MQTT disconnected from {s.host}:{s.port}: {reason}"
        self._set_link_state("disconnected", why, logging.WARNING, connected=False, error=f"disconnected: {reason}")

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        accepted = not reason_code.is_failure
        with self._lock:
            pending = self._pending.pop(mid, None)
            if pending is None:
                self._early_acks[mid] = accepted
            else:
                self._count_ack(pending.data, accepted)
            if not accepted:
                self._last_error = f"broker rejected a publish: {reason_code}"
            self._lock.notify_all()

    def _count_ack(self, data: bool, accepted: bool) -> None:
        # Caller holds self._lock.
        if not data:
            return
        if accepted:
            self._acked += 1
        else:
            self._dropped += 1

    def _set_link_state(self, state: str, message: str, level: int, *, connected: bool, error: str | None = None) -> None:
        with self._lock:
            changed = state != self._link_state
            self._link_state = state
            self._connected = connected
            if error is not None:
                self._last_error = error
            self._lock.notify_all()
        if changed:
            log.log(level, message)

    def _configure_tls(self, client: mqtt.Client) -> None:
        s = self._settings
        for name in ("tls_ca", "tls_cert", "tls_key"):
            path = getattr(s, name)
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"mqtt.{name} {path} does not exist: check the path in the config")
        client.tls_set(
            ca_certs=str(s.tls_ca),
            certfile=str(s.tls_cert) if s.tls_cert else None,
            keyfile=str(s.tls_key) if s.tls_key else None,
        )

    def __enter__(self) -> MqttPublisher:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self._settings
        return f"MqttPublisher({s.host}:{s.port}, {s.base_topic}, connected={self.connected})"
