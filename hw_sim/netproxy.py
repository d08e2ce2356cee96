"""A TCP proxy on loopback that can cut the traffic it carries, for fault injection.

Put it between the agent and the broker (point the agent at the proxy's port) and switch it:

    pass    forward both ways (the default);
    stall   keep every connection open but forward nothing, and hold new ones the same way:
            a hung uplink, or a NAT that silently dropped its mapping. Data already read
            waits in the proxy and moves on when it passes again;
    drop    reset (RST) every open connection and every new one at once: a cut cable,
            a rebooted router.

One thread, one selector; every socket is closed by stop(). A device sees exactly what it
would see on a real network: the agent's code path does not change, only the address.
"""

from __future__ import annotations

import logging
import selectors
import socket
import struct
import threading
from types import TracebackType

log = logging.getLogger(__name__)

MODES = ("pass", "stall", "drop")
_CHUNK = 65536
_MAX_BUFFERED = 1 << 20  # per direction; past this the proxy stops reading (TCP back-pressure)
_TICK_S = 0.05
_CONNECT_TIMEOUT_S = 2.0
_FLUSH_TIMEOUT_S = 1.0  # a clean close forwards what is still buffered for this long at most


def _reset(sock: socket.socket) -> None:
    """Close with an RST rather than a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class _Pipe:
    """One proxied connection: the agent's socket, the server's socket and what is in transit."""

    def __init__(self, client: socket.socket, server: socket.socket):
        self.client = client
        self.server = server
        self.to_client = bytearray()
        self.to_server = bytearray()

    def peer(self, sock: socket.socket) -> socket.socket:
        return self.server if sock is self.client else self.client

    def outgoing(self, sock: socket.socket) -> bytearray:
        """Bytes waiting to be written to sock."""
        return self.to_client if sock is self.client else self.to_server


class NetProxy:
    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1", port: int = 0):
        self._target = (target_host, target_port)
        self._address = (host, port)
        self._mode = "pass"
        self._lock = threading.Lock()
        self._applied = threading.Condition(self._lock)
        self._generation = 0  # bumped by every mode change; the loop reports which it applied
        self._applied_generation = 0
        self._listener: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._pipes: list[_Pipe] = []
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.accepted = 0
        self.resets = 0
        self.bytes_forwarded = 0

    @property
    def host(self) -> str:
        return self._address[0]

    @property
    def port(self) -> int:
        """The listening port (chosen at start() when 0 was given)."""
        return self._address[1]

    @property
    def mode(self) -> str:
        with self._lock:
            return self._mode

    @property
    def connections(self) -> int:
        return len(self._pipes)

    def start(self) -> None:
        if self._thread is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(self._address)
        listener.listen(16)
        listener.setblocking(False)
        self._address = listener.getsockname()[:2]
        self._listener = listener
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, None)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"netproxy:{self.port}", daemon=True)
        self._thread.start()

    def set_mode(self, mode: str, timeout: float = 2.0) -> None:
        """Switch to pass, stall or drop; returns once the proxy acts on it."""
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r}: use one of {', '.join(MODES)}")
        with self._lock:
            self._mode = mode
            self._generation += 1
            wanted = self._generation
            if self._thread is None:
                return
            if not self._applied.wait_for(lambda: self._applied_generation >= wanted, timeout):
                raise TimeoutError(f"netproxy did not switch to {mode} within {timeout} s")
        log.debug("netproxy %d: %s", self.port, mode)

    def pass_through(self) -> None:
        self.set_mode("pass")

    def stall(self) -> None:
        self.set_mode("stall")

    def drop(self) -> None:
        self.set_mode("drop")

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping = True
        thread.join(5.0)
        for pipe in self._pipes:
            pipe.client.close()
            pipe.server.close()
        self._pipes = []
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    # -- the proxy thread --------------------------------------------------------------

    def _run(self) -> None:
        selector = self._selector
        assert selector is not None
        while not self._stopping:
            with self._lock:
                mode, generation = self._mode, self._generation
            if mode == "drop":
                for pipe in list(self._pipes):
                    self._close_pipe(pipe, reset=True)
            self._update_interest(mode)
            with self._lock:
                self._applied_generation = generation
                self._applied.notify_all()
            for key, events in selector.select(_TICK_S):
                if key.data is None:
                    self._accept(mode)
                    continue
                pipe: _Pipe = key.data
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                if pipe not in self._pipes:
                    continue  # closed earlier in this batch
                try:
                    if events & selectors.EVENT_WRITE:
                        out = pipe.outgoing(sock)
                        sent = sock.send(out)
                        del out[:sent]
                        self.bytes_forwarded += sent
                    if events & selectors.EVENT_READ:
                        data = sock.recv(_CHUNK)
                        if not data:
                            self._flush(pipe.peer(sock), pipe)
                            self._close_pipe(pipe, reset=False)
                            continue
                        pipe.outgoing(pipe.peer(sock)).extend(data)
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    self._close_pipe(pipe, reset=True)

    def _accept(self, mode: str) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        self.accepted += 1
        if mode == "drop":
            self.resets += 1
            _reset(client)
            return
        try:
            server = socket.create_connection(self._target, timeout=_CONNECT_TIMEOUT_S)
        except OSError:
            _reset(client)  # as if the server itself had refused
            return
        for sock in (client, server):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pipe = _Pipe(client, server)
        self._pipes.append(pipe)
        assert self._selector is not None
        self._selector.register(client, selectors.EVENT_READ, pipe)
        self._selector.register(server, selectors.EVENT_READ, pipe)

    def _update_interest(self, mode: str) -> None:
        assert self._selector is not None
        for pipe in self._pipes:
            for sock in (pipe.client, pipe.server):
                events = 0
                if mode == "pass":
                    if len(pipe.outgoing(pipe.peer(sock))) < _MAX_BUFFERED:
                        events |= selectors.EVENT_READ
                    if pipe.outgoing(sock):
                        events |= selectors.EVENT_WRITE
                registered = self._registered(sock)
                if events and registered:
                    self._selector.modify(sock, events, pipe)
                elif events:
                    self._selector.register(sock, events, pipe)
                elif registered:
                    self._selector.unregister(sock)

    def _registered(self, sock: socket.socket) -> bool:
        assert self._selector is not None
        try:
            self._selector.get_key(sock)
            return True
        except KeyError:
            return False

    def _flush(self, sock: socket.socket, pipe: _Pipe) -> None:
        """Before a clean close: what the closing side sent last (an MQTT DISCONNECT, say) still
        reaches its peer, as it would without the proxy."""
        out = pipe.outgoing(sock)
        try:
            sock.settimeout(_FLUSH_TIMEOUT_S)
            sock.sendall(out)
            self.bytes_forwarded += len(out)
        except OSError:  # the peer is gone too: nothing to deliver to
            self.resets += 1
        out.clear()

    def _close_pipe(self, pipe: _Pipe, reset: bool) -> None:
        if pipe in self._pipes:
            self._pipes.remove(pipe)
        if reset:
            self.resets += 1
        for sock in (pipe.client, pipe.server):
            if self._selector is not None and self._registered(sock):
                self._selector.unregister(sock)
            if reset:
                _reset(sock)
            else:
                sock.close()

    def __enter__(self) -> NetProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"NetProxy({self.host}:{self.port} -> {self._target[0]}:{self._target[1]}, {self.mode})"
