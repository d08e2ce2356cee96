"""Scale protocols, parsed without any I/O: Mettler Toledo MT-SICS and Toledo continuous output.

MT-SICS (request/response, CR LF terminated ASCII), for `SI` / `S`:

    S S     100.00 g     stable weight          S +   overload
    S D     100.02 g     dynamic (moving)       S -   underload
    S I                  busy, try again        ES / ET / EL  syntax / transmission / logic error

Toledo continuous output (sent unasked, 7 data bits), 17 or 18 bytes a frame:

    STX SWA SWB SWC  wwwwww  tttttt  CR  [CKS]

    SWA bits 0-2: decimal point (0: xxxx00, 1: xxxxx0, 2: xxxxxx, 3: xxxxx.x ... 7: x.xxxxx)
    SWB bit 0 net, 1 negative, 2 out of range, 3 motion, 4 kg (else lb), 6 power-up not zeroed
    SWC bits 0-2 unit: 0 lb/kg (from SWB), 1 g, 2 metric t, 3 oz
    CKS: two's complement of the low 7 bits of the sum of all bytes before it, STX and CR included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

STABLE, DYNAMIC, OVERLOAD, UNDERLOAD, BUSY, ERROR = "stable", "dynamic", "overload", "underload", "busy", "error"

GRAMS_PER_UNIT = {"g": 1.0, "kg": 1000.0, "mg": 0.001, "t": 1_000_000.0, "lb": 453.59237, "oz": 28.349523125,
                  "ct": 0.2}


@dataclass(frozen=True)
class ScaleReading:
    status: str  # STABLE, DYNAMIC, OVERLOAD, UNDERLOAD, BUSY or ERROR
    weight_g: float | None = None  # with STABLE and DYNAMIC only
    detail: str = ""


class ProtocolError(ValueError):
    """Bytes that are not a valid message. `kind`: garbage, checksum or unit."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


# -- MT-SICS -----------------------------------------------------------------------------

MTSICS_REQUEST_IMMEDIATE = b"SI\r\n"  # the current weight, stable or not
_MTSICS_WEIGHT = re.compile(r"^S\s+([SD])\s+(-?\s*\d+(?:\.\d+)?)\s+([A-Za-z]{1,3})$")
_MTSICS_STATUS = {"S I": (BUSY, "scale busy (S I)"), "S +": (OVERLOAD, "overload (S +)"),
                  "S -": (UNDERLOAD, "underload (S -)"), "ES": (ERROR, "syntax error (ES)"),
                  "ET": (ERROR, "transmission error (ET)"), "EL": (ERROR, "logical error (EL)")}


def parse_mtsics(line: bytes) -> ScaleReading:
    """One reply line, without its CR LF."""
    try:
        text = line.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ProtocolError("garbage", f"not ASCII: {line[:32]!r}") from None
    if text in _MTSICS_STATUS:
        status, detail = _MTSICS_STATUS[text]
        return ScaleReading(status, detail=detail)
    match = _MTSICS_WEIGHT.match(text)
    if match is None:
        raise ProtocolError("garbage", f"not an MT-SICS weight reply: {text[:32]!r}")
    flag, value, unit = match.groups()
    if unit not in GRAMS_PER_UNIT:
        raise ProtocolError("unit", f"unknown unit {unit!r}")
    weight = float(value.replace(" ", "")) * GRAMS_PER_UNIT[unit]
    return ScaleReading(STABLE if flag == "S" else DYNAMIC, weight)


# -- Toledo continuous ---------------------------------------------------------------------

STX, CR = 0x02, 0x0D
_TOLEDO_BODY = 16  # STX .. the last tare digit; the CR follows


def toledo_checksum(data: bytes) -> int:
    return (-sum(b & 0x7F for b in data)) & 0x7F


def _digits(field: bytes) -> int:
    text = field.decode("ascii").replace(" ", "0")
    if not text.isdigit():
        raise ProtocolError("garbage", f"weight field is not digits: {field!r}")
    return int(text)


def parse_toledo(frame: bytes) -> ScaleReading:
    """One frame from STX to CR (checksum already checked and removed)."""
    swa, swb, swc = frame[1], frame[2], frame[3]
    weight_digits = _digits(frame[4:10])
    if swb & 0x04:
        return ScaleReading(UNDERLOAD if swb & 0x02 else OVERLOAD, detail="out of range")
    if swb & 0x40:
        return ScaleReading(BUSY, detail="power-up, not zeroed")
    unit_code = swc & 0x07
    if unit_code == 0:
        grams = GRAMS_PER_UNIT["kg"] if swb & 0x10 else GRAMS_PER_UNIT["lb"]
    elif unit_code in (1, 2, 3):
        grams = {1: 1.0, 2: GRAMS_PER_UNIT["t"], 3: GRAMS_PER_UNIT["oz"]}[unit_code]
    else:
        raise ProtocolError("unit", f"unsupported unit code {unit_code}")
    weight = weight_digits * 10.0 ** (2 - (swa & 0x07)) * grams
    if swb & 0x02:
        weight = -weight
    return ScaleReading(DYNAMIC if swb & 0x08 else STABLE, weight)


class ToledoFramer:
    """Splits a byte stream into frames, resynchronising on STX after any damage."""

    def __init__(self, checksum: bool = True):
        self._checksum = checksum
        self._length = _TOLEDO_BODY + 1 + (1 if checksum else 0)
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[ScaleReading | ProtocolError]:
        out: list[ScaleReading | ProtocolError] = []
        self._buffer += bytes(b & 0x7F for b in data)  # the 8th bit is parity, when a port passes it on
        while True:
            start = self._buffer.find(STX)
            if start < 0:
                if self._buffer:
                    out.append(ProtocolError("garbage", f"{len(self._buffer)} bytes outside a frame"))
                    self._buffer.clear()
                return out
            if start > 0:
                out.append(ProtocolError("garbage", f"{start} bytes outside a frame"))
                del self._buffer[:start]
            if len(self._buffer) < self._length:
                return out
            frame = bytes(self._buffer[: self._length])
            if frame[_TOLEDO_BODY] != CR:
                out.append(ProtocolError("garbage", "frame without CR in place"))
                del self._buffer[:1]
                continue
            if self._checksum and toledo_checksum(frame[:-1]) != frame[-1]:
                out.append(ProtocolError("checksum", "bad checksum"))
                del self._buffer[: self._length]
                continue
            del self._buffer[: self._length]
            try:
                out.append(parse_toledo(frame[: _TOLEDO_BODY + 1]))
            except ProtocolError as exc:
                out.append(exc)
