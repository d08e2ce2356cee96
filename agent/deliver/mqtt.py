"""The agent's MQTT link. The only agent module that imports paho-mqtt.

One MqttPublisher is one MQTT v5 connection for one device, from start() to close():

- a persistent session: clean_start=False with a session expiry, so the broker keeps the
  session (and, later, the command subscriptions) across short outages;
- a retained birth message and Last Will on `{prefix}/{device}/status`, carrying the agent's
  version and its session counter (how many times the agent has started);
- one explicit reconnect loop (`_network_loop`): exponential backoff from reconnect_min_s
  to reconnect_max_s, each delay shortened by a random jitter, so a fleet does not
  reconnect in step after a broker restart.

Two ways to publish:

- `send()` is what the outbox uses. Each message's PUBACK is reported to its own callback;
  the outbox deletes the row only then. A message handed over while the link is down stays
  in paho's memory and goes out on reconnect; the outbox bounds how many with its
  in-flight window. paho's memory is not persistence: the outbox is.
- `publish_event()` / `publish_crop()` are fire-and-forget (memory only): for tools and
  tests that have no outbox.

Commands come in through `subscribe()`: the filters are (re)subscribed on every connection,
and each message is handed to its handler as an IncomingMessage, with the MQTT 5 Response
Topic and Correlation Data. Replies go out with `publish_to()`; retained state with
`publish_retained()`. `MqttRequester` is the other side: one request, one reply (for ctl
and benchmarks).

Topics are laid out in topics.py; payload schemas are in schemas/.
"""

from __future__ import annotations

import json
import logging
import math
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from . import topics

log = logging.getLogger(__name__)

STATUS_SCHEMA = 1
# How long one pass of the network loop may wait in select(); bounds how late it notices close().
_LOOP_TIMEOUT_S = 0.25
# After close()'s own budget, extra time for the network thread to notice and exit.
_THREAD_EXIT_GRACE_S = 0.25
# Each reconnect delay is cut by up to this fraction at random ("equal jitter").
_JITTER = 0.5

# QoS>0 messages on the wire at once: mosquitto's Receive Maximum, and paho's default.
_INFLIGHT = 20

OnAck = Callable[[bool], None]


@dataclass(frozen=True)
class IncomingMessage:
    """One message received on a subscribed topic, without paho types."""

    topic: str
    payload: bytes
    retain: bool = False
    response_topic: str | None = None
    correlation_data: bytes | None = None
    content_type: str | None = None


OnMessage = Callable[[IncomingMessage], None]


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
    # The broker keeps our session this long after a disconnect; 0 ends it with the connection.
    session_expiry_s: int = 24 * 3600
    # MQTT message expiry for publish_event/publish_crop; None: none. The outbox sets its own.
    message_expiry_s: int | None = None
    connect_timeout_s: float = 5.0

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
        if not 0 <= self.session_expiry_s <= 0xFFFFFFFF:
            raise ValueError(f"mqtt.session_expiry_s must be 0-4294967295, not {self.session_expiry_s}")
        if self.message_expiry_s is not None and not 0 < self.message_expiry_s <= 0xFFFFFFFF:
            raise ValueError(f"mqtt.message_expiry_s must be 1-4294967295 or None, not {self.message_expiry_s}")
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
        return topics.base(self.topic_prefix, self.device_id)

    @property
    def status_topic(self) -> str:
        return f"{self.base_topic}/{topics.STATUS}"

    @property
    def stats_topic(self) -> str:
        return f"{self.base_topic}/{topics.STATS}"


@dataclass(frozen=True)
class _Pending:
    data: bool  # an event or crop (counted in stats), not a status or stats message
    qos: int
    on_ack: OnAck | None


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _no_delay(client: mqtt.Client) -> None:
    """Send small packets (a command's reply, a PUBACK) at once instead of waiting on Nagle's algorithm."""
    sock = client.socket()
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
    except (OSError, AttributeError):  # not TCP (a websocket wrapper), or already gone
        pass


def reconnect_delay(attempt: int, min_s: float, max_s: float, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait before reconnect attempt `attempt` (0 = the first retry).

    Doubles from min_s up to max_s; jitter takes up to half of it off, at random.
    """
    ceiling = min(max_s, min_s * 2 ** min(attempt, 32))
    return ceiling * (1.0 - _JITTER * rng())


class MqttPublisher:
    """One MQTT connection for one device, from start() to close().

    All public methods are safe to call from any thread and never block on the
    network, except close(), which waits a bounded time for acknowledgements.
    `session` is the agent's start counter (kept by the outbox); it is in the
    birth message and the Last Will, so a consumer can tell a restart from a reconnect.
    """

    def __init__(self, settings: MqttSettings, version: str = "0.1.0", session: int = 0):
        self._settings = settings
        self._version = version
        self._session = session
        self._lock = threading.Condition()
        self._client: mqtt.Client | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()  # wakes the reconnect loop's back-off wait
        self._hard_stop = False  # close() ran out of time: leave the loop now
        self._started = False
        self._closed = False
        self._connected = False
        self._connections = 0  # successful CONNACKs since start()
        self._attempt = 0  # failed attempts since the last successful CONNACK
        self._link_state = "idle"  # what we last logged: idle / connected / disconnected / connect_failed / refused
        # Messages handed to paho and not yet acknowledged, by mid. Guarded by _lock.
        self._pending: dict[int, _Pending] = {}
        # mid -> accepted?, for acks that arrived before publish() returned the mid to us.
        self._early_acks: dict[int, bool] = {}
        self._published = 0
        self._acked = 0
        self._dropped = 0
        self._last_error: str | None = None
        # Absolute topic filter -> handler; subscribed again on every connection.
        self._subscriptions: dict[str, OnMessage] = {}
        self._received = 0

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
        client.max_inflight_messages_set(_INFLIGHT)
        client.connect_timeout = s.connect_timeout_s

        will_props = Properties(PacketTypes.WILLMESSAGE)
        will_props.ContentType = "application/json"
        will = {"schema": STATUS_SCHEMA, "state": "offline", "version": self._version, "session": self._session}
        client.will_set(s.status_topic, _json_bytes(will), qos=1, retain=True, properties=will_props)

        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        # With a write callback registered, paho never writes on the publishing thread: it
        # queues the packet and wakes our select() through its socket pair. Only the network
        # thread touches the socket.
        client.on_socket_register_write = lambda *_: None

        connect_props = Properties(PacketTypes.CONNECT)
        connect_props.SessionExpiryInterval = s.session_expiry_s
        # Stores host, port and the session flags; the first attempt is made by the loop.
        client.connect_async(s.host, s.port, keepalive=s.keepalive_s, clean_start=False, properties=connect_props)
        self._client = client
        self._thread = threading.Thread(target=self._network_loop, args=(client,), name="mqtt-network", daemon=True)
        self._thread.start()
        log.info("MQTT publishing to %s:%d as %s under %s/ (session %d)",
                 s.host, s.port, s.effective_client_id, s.base_topic, self._session)

    def _network_loop(self, client: mqtt.Client) -> None:
        """Connect, run the connection until it ends, wait (backoff + jitter), repeat; until close()."""
        s = self._settings
        while not self._closing.is_set():
            try:
                client.reconnect()
            except OSError as exc:  # refused, unreachable, timed out, TLS failure
                self._connect_failed(exc)
            except Exception:  # a bug of ours must not end the link for good
                log.exception("MQTT connect attempt failed")
            else:
                try:
                    while not self._hard_stop:
                        if client.loop(timeout=_LOOP_TIMEOUT_S) != mqtt.MQTT_ERR_SUCCESS:
                            break
                except Exception:
                    # Raised from one of our callbacks. The next reconnect() closes the socket.
                    log.exception("MQTT network loop failed; reconnecting")
            if self._closing.is_set():
                break
            with self._lock:
                attempt = self._attempt
                self._attempt += 1
            self._closing.wait(reconnect_delay(attempt, s.reconnect_min_s, s.reconnect_max_s))

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
            self._publish(self._settings.status_topic, _json_bytes(self._status("stopped")), "application/json",
                          qos=1, retain=True)
            with self._lock:
                self._lock.wait_for(lambda: not self._pending or not self._connected, deadline - time.monotonic())
                unacked = len(self._pending)
            if unacked:
                log.warning("MQTT closing with %d messages unacknowledged after %.1f s", unacked, timeout_s)

        # A clean DISCONNECT: the broker drops the Will, so the retained status stays "stopped".
        client.disconnect()
        self._closing.set()
        self._stop_network_thread(client, deadline)

    def _stop_network_thread(self, client: mqtt.Client, deadline: float) -> None:
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()) + _THREAD_EXIT_GRACE_S)
            if thread.is_alive():
                # Stuck on a broker that stopped reading: break the socket so the loop ends.
                self._hard_stop = True
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

    def send(
        self,
        subtopic: str,
        payload: bytes,
        content_type: str,
        *,
        on_ack: OnAck,
        user_properties: Sequence[tuple[str, str]] = (),
        expiry_s: int | None = None,
    ) -> bool:
        """Hand one message to the link; `on_ack(accepted)` runs when the broker acknowledges it.

        on_ack runs on the network thread, with paho's lock held: it must be quick and must
        not call back into this publisher. accepted is False when the broker refused the
        message (a PUBACK reason code >= 0x80). send() returns False when the message was
        not taken (closed, or paho's queue is full): keep it and offer it again later.
        """
        return self._publish(
            f"{self._settings.base_topic}/{subtopic}", payload, content_type, qos=self._settings.qos,
            user_properties=user_properties, expiry_s=expiry_s, data=True, on_ack=on_ack,
        )

    def publish_event(self, line: str, event: dict) -> None:
        topic = f"{self._settings.base_topic}/{topics.event(line)}"
        self._publish(topic, _json_bytes(event), "application/json", qos=self._settings.qos,
                      expiry_s=self._settings.message_expiry_s, data=True)

    def publish_crop(
        self,
        line: str,
        event_id: str,
        index: int,
        jpeg: bytes,
        meta: dict[str, str | int | float],
    ) -> None:
        topic = f"{self._settings.base_topic}/{topics.crop(line, event_id, index)}"
        user_properties = [(str(k), str(v)) for k, v in meta.items()]
        self._publish(topic, bytes(jpeg), "image/jpeg", qos=self._settings.qos, user_properties=user_properties,
                      expiry_s=self._settings.message_expiry_s, data=True)

    def publish_stats(self, body: dict, expiry_s: int | None = None) -> None:
        """The periodic stats message: QoS 0, not retained, dropped while the link is down."""
        payload = {"schema": STATUS_SCHEMA, "device_id": self._settings.device_id, "session": self._session, **body}
        self._publish(self._settings.stats_topic, _json_bytes(payload), "application/json", qos=0, expiry_s=expiry_s)

    def subscribe(self, subtopic_filter: str, handler: OnMessage) -> None:
        """Receive messages on `{prefix}/{device}/{subtopic_filter}` (QoS 1), now and after every reconnect.

        `handler` runs on the network thread: it must be quick (hand the work to a queue) and
        must not block on this publisher.
        """
        topic_filter = f"{self._settings.base_topic}/{subtopic_filter}"
        with self._lock:
            self._subscriptions[topic_filter] = handler
            client = self._client if self._connected else None
        if client is not None:
            client.subscribe(topic_filter, qos=1)

    def publish_to(self, topic: str, payload: bytes, content_type: str = "application/json", *,
                   correlation_data: bytes | None = None, qos: int = 1) -> bool:
        """A message to an absolute topic (a command's reply); memory only, like publish_event."""
        return self._publish(topic, payload, content_type, qos=qos, correlation_data=correlation_data)

    def publish_retained(self, subtopic: str, body: dict) -> bool:
        """Retained JSON under this device's base topic (the `state` mirror)."""
        return self._publish(f"{self._settings.base_topic}/{subtopic}", _json_bytes(body), "application/json",
                             qos=1, retain=True)

    @property
    def base_topic(self) -> str:
        return self._settings.base_topic

    def _publish(
        self,
        topic: str,
        payload: bytes,
        content_type: str,
        *,
        qos: int,
        retain: bool = False,
        user_properties: Sequence[tuple[str, str]] = (),
        expiry_s: int | None = None,
        data: bool = False,
        on_ack: OnAck | None = None,
        correlation_data: bytes | None = None,
    ) -> bool:
        client = self._client
        if client is None or (self._closed and data):
            # Before start() or after close(): there is no link to queue on.
            self._count_drop(topic, "publisher not started" if client is None else "publisher closed", data)
            return False
        props = Properties(PacketTypes.PUBLISH)
        props.ContentType = content_type
        if user_properties:
            props.UserProperty = list(user_properties)
        if expiry_s is not None:
            props.MessageExpiryInterval = max(1, int(math.ceil(expiry_s)))
        if correlation_data is not None:
            props.CorrelationData = correlation_data
        # Must not hold self._lock here: paho calls on_publish with its own lock held.
        info = client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            self._count_drop(topic, f"send queue full ({self._settings.max_queued} messages)", data)
            return False
        if info.rc == mqtt.MQTT_ERR_NO_CONN and qos == 0:
            self._count_drop(topic, "not connected (QoS 0 messages are not queued)", data)
            return False
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            # NO_CONN with QoS>0 is fine: paho keeps the message and sends it on reconnect.
            self._count_drop(topic, f"publish failed: {mqtt.error_string(info.rc)}", data)
            return False
        with self._lock:
            if data:
                self._published += 1
            accepted = self._early_acks.pop(info.mid, None)
            if accepted is None:
                self._pending[info.mid] = _Pending(data=data, qos=qos, on_ack=on_ack)
                return True
            self._count_ack(data, accepted)
        if on_ack is not None:
            on_ack(accepted)
        return True

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

    @property
    def connections(self) -> int:
        """Successful connections since start(): changes on every reconnect."""
        with self._lock:
            return self._connections

    @property
    def session(self) -> int:
        return self._session

    @property
    def received(self) -> int:
        """Messages received on subscribed topics since start()."""
        with self._lock:
            return self._received

    def stats(self) -> dict:
        """Counts for health. published/acked/dropped cover events and crops, not status or stats messages."""
        with self._lock:
            return {
                "connected": self._connected,
                "connections": self._connections,
                "session": self._session,
                "published": self._published,
                "acked": self._acked,
                "dropped": self._dropped,
                "unacked": sum(p.data for p in self._pending.values()),
                "last_error": self._last_error,
            }

    def _status(self, state: str) -> dict:
        return {"schema": STATUS_SCHEMA, "state": state, "version": self._version, "session": self._session,
                "ts": round(time.time(), 3)}

    # -- paho callbacks (network thread) ------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        s = self._settings
        if reason_code.is_failure:
            why = f"broker {s.host}:{s.port} refused the connection: {reason_code}"
            self._set_link_state("refused", why, logging.WARNING, connected=False, error=why)
            return
        receive_maximum = getattr(properties, "ReceiveMaximum", None)
        if receive_maximum and receive_maximum < client.max_inflight_messages:
            # paho does not follow the broker's Receive Maximum, and cannot change its own limit
            # once a client has connected: say so, the broker may drop the connection.
            log.warning("MQTT broker %s:%d takes only %d messages in flight, fewer than the %d this client sends",
                        s.host, s.port, receive_maximum, client.max_inflight_messages)
        _no_delay(client)
        with self._lock:
            self._connections += 1
            self._attempt = 0
            closed = self._closed
        resumed = " (session resumed)" if flags.session_present else ""
        self._set_link_state("connected", f"MQTT connected to {s.host}:{s.port}{resumed}", logging.INFO, connected=True)
        if closed:  # close() raced with this connection: end it cleanly
            client.disconnect()
            return
        # Subscribe before saying "online": the broker takes packets in order, so whoever sees
        # the birth message can already reach the command topics.
        with self._lock:
            filters = list(self._subscriptions)
        for topic_filter in filters:
            client.subscribe(topic_filter, qos=1)
        self._publish(s.status_topic, _json_bytes(self._status("online")), "application/json", qos=1, retain=True)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        props = message.properties
        response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        content_type = getattr(props, "ContentType", None) if props is not None else None
        incoming = IncomingMessage(message.topic, bytes(message.payload), bool(message.retain),
                                   response_topic or None, bytes(correlation) if correlation else None, content_type)
        with self._lock:
            self._received += 1
            handlers = [h for f, h in self._subscriptions.items() if mqtt.topic_matches_sub(f, message.topic)]
        for handler in handlers:
            try:
                handler(incoming)
            except Exception:  # a bug of ours in a handler must not end the connection
                log.exception("MQTT handler for %s failed", message.topic)

    def _connect_failed(self, exc: BaseException) -> None:
        s = self._settings
        why = (f"cannot connect to MQTT broker {s.host}:{s.port} ({exc}); "
               f"retrying every {s.reconnect_min_s:g}-{s.reconnect_max_s:g} s")
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
            refused = self._link_state == "refused"
        if refused:  # the broker hung up after refusing us: that was already said, once
            return
        # Without a DISCONNECT packet from the broker paho reports "Unspecified error".
        reason = str(reason_code) if flags.is_disconnect_packet_from_server else "connection lost"
        why = f"MQTT disconnected from {s.host}:{s.port}: {reason}"
        self._set_link_state("disconnected", why, logging.WARNING, connected=False, error=f"disconnected: {reason}")

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        accepted = not reason_code.is_failure
        first_rejection = False
        with self._lock:
            pending = self._pending.pop(mid, None)
            if pending is None:
                self._early_acks[mid] = accepted
            else:
                self._count_ack(pending.data, accepted)
            if not accepted:
                why = f"broker rejected a publish: {reason_code}"
                first_rejection = self._last_error != why
                self._last_error = why
            self._lock.notify_all()
        if first_rejection:
            log.warning("MQTT broker %s:%d rejected a message: %s (check its ACL and limits)",
                        self._settings.host, self._settings.port, reason_code)
        if pending is not None and pending.on_ack is not None:
            pending.on_ack(accepted)

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


class MqttRequester:
    """The other side of the command topics: send a request, wait for its reply (ctl, benchmarks).

    One MQTT v5 connection from __enter__ to __exit__. Each request carries a Response Topic
    and fresh Correlation Data; the reply with that correlation is returned, others are ignored.
    """

    def __init__(self, host: str, port: int = 1883, *, reply_topic: str, client_id: str = "",
                 username: str | None = None, password: str | None = None, tls_ca: Path | None = None,
                 connect_timeout_s: float = 5.0):
        self.reply_topic = reply_topic
        self._host, self._port = host, port
        self._connect_timeout_s = connect_timeout_s
        self._client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                   protocol=mqtt.MQTTv5)
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls_ca is not None:
            self._client.tls_set(ca_certs=str(tls_ca))
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._waiting: dict[bytes, list] = {}  # correlation -> [Event, reply payload]
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_: self._ready.set()
        self._client.on_message = self._on_message

    def __enter__(self) -> MqttRequester:
        try:
            self._client.connect(self._host, self._port, keepalive=30)
        except OSError as exc:
            raise ConnectionError(f"cannot connect to MQTT broker {self._host}:{self._port}: {exc}") from None
        self._client.loop_start()
        if not self._ready.wait(self._connect_timeout_s):
            self.__exit__()
            raise ConnectionError(f"MQTT broker {self._host}:{self._port} did not accept the connection "
                                  f"and subscription within {self._connect_timeout_s:g} s")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if not reason_code.is_failure:
            _no_delay(client)
            client.subscribe(self.reply_topic, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        correlation = getattr(message.properties, "CorrelationData", None)
        with self._lock:
            slot = self._waiting.get(bytes(correlation)) if correlation else None
        if slot is not None:
            slot[1] = bytes(message.payload)
            slot[0].set()

    def publish(self, topic: str, payload: bytes, *, response_topic: str | None = None,
                correlation_data: bytes | None = None, retain: bool = False, qos: int = 1) -> None:
        props = Properties(PacketTypes.PUBLISH)
        props.ContentType = "application/json"
        if response_topic:
            props.ResponseTopic = response_topic
        if correlation_data:
            props.CorrelationData = correlation_data
        self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)

    def request(self, topic: str, payload: bytes, timeout_s: float = 5.0) -> bytes | None:
        """Publish one request and return its reply's payload, or None after timeout_s."""
        correlation = uuid.uuid4().bytes
        slot: list = [threading.Event(), None]
        with self._lock:
            self._waiting[correlation] = slot
        try:
            self.publish(topic, payload, response_topic=self.reply_topic, correlation_data=correlation)
            slot[0].wait(timeout_s)
            return slot[1]
        finally:
            with self._lock:
                self._waiting.pop(correlation, None)
