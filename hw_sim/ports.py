"""Ports for the simulator's servers, chosen below the kernel's ephemeral range.

A simulated camera, POS, PLC or broker is killed and started again on the same port. A port
from bind(0) lies in the ephemeral range, and while the server is down the kernel may give it
to some client's outgoing connection, even to the very client retrying it (a TCP self-connect:
127.0.0.1:P connected to itself). The restarted server then cannot listen. Below the range no
client is ever given the port.
"""

from __future__ import annotations

import random
import socket

_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"


def server_port(host: str = "127.0.0.1") -> int:
    """A port that is free now and that the kernel never hands out as a client's own port."""
    try:
        with open(_RANGE_FILE) as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    top = low - 1
    bottom = max(1024, top - 12000)
    for _ in range(200):
        port = random.randint(bottom, top)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port between {bottom} and {top} on {host}")
