"""pyserial adapter: the only module that imports pyserial.

A port is a device path (/dev/ttyUSB0, /dev/serial/by-id/...), or a pyserial URL such as
`socket://10.0.0.5:4001` for a scale behind a serial-to-Ethernet converter.
"""

from __future__ import annotations

import termios

import serial

# termios.error is not an OSError: pyserial lets it through when a pty or USB adapter vanishes.
_PORT_ERRORS = (serial.SerialException, OSError, termios.error, AttributeError)
PARITIES = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}


class SerialError(Exception):
    """The port cannot be opened, or went away (unplugged, converter reset). Names the port."""


class SerialPort:
    """One open serial connection: a context manager; reads return b"" on timeout."""

    def __init__(self, port: str, baudrate: int = 9600, bytesize: int = 8, parity: str = "N",
                 stopbits: int = 1, timeout_s: float = 0.1):
        self.port = port
        self._settings = dict(baudrate=baudrate, bytesize=bytesize, parity=PARITIES[parity], stopbits=stopbits,
                              timeout=timeout_s, write_timeout=1.0)
        self._serial = None

    def open(self) -> SerialPort:
        try:
            self._serial = serial.serial_for_url(self.port, **self._settings)
            self._serial.reset_input_buffer()  # what queued up before we listened is stale
        except (*_PORT_ERRORS, ValueError) as exc:
            self._serial = None
            raise SerialError(f"serial port {self.port}: {exc}") from None
        return self

    def read(self, max_bytes: int = 256) -> bytes:
        """What has arrived, up to max_bytes; b"" if nothing came within the timeout."""
        try:
            waiting = self._serial.in_waiting
            return self._serial.read(max(1, min(max_bytes, waiting)))
        except _PORT_ERRORS as exc:
            raise SerialError(f"serial port {self.port}: {exc}") from None

    def write(self, data: bytes) -> None:
        try:
            self._serial.write(data)
        except _PORT_ERRORS as exc:
            raise SerialError(f"serial port {self.port}: {exc}") from None

    def discard_input(self) -> None:
        try:
            self._serial.reset_input_buffer()
        except _PORT_ERRORS as exc:
            raise SerialError(f"serial port {self.port}: {exc}") from None

    def close(self) -> None:
        if self._serial is not None:
            try:
                self._serial.close()
            except _PORT_ERRORS:
                pass
            self._serial = None

    def __enter__(self) -> SerialPort:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()
