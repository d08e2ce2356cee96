"""A ThreadingHTTPServer on a thread of its own: what the simulated camera and cloud run on."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HttpThread:
    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], name: str, wrap_socket=None):
        """wrap_socket: e.g. an ssl.SSLContext's, to serve HTTPS."""
        self.server = ThreadingHTTPServer(address, handler)
        self.server.daemon_threads = True
        if wrap_socket is not None:
            self.server.socket = wrap_socket(self.server.socket, server_side=True)
        self._thread = threading.Thread(target=self.server.serve_forever, name=name, daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return self.server.server_address[:2]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(2.0)
