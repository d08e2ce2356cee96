"""Where each message goes: the MQTT topic layout, in one place.

Every topic sits under `{prefix}/{device_id}/`. The outbox stores the part below that
(the *subtopic*), so a row written before a change of prefix or device id is sent to
the new place, not to the old one.

    status                          retained JSON: online / stopped / offline (Last Will)
    stats                           JSON counters, every outbox.stats_interval_s
    events/{line}                   one JSON event per inspection
    crops/{line}/{event_id}/{n}     JPEG bytes of defect n, metadata as user properties

    cmd/{command...}                commands in (agent/control/commands.py); replies go to the
                                    request's Response Topic, its reply_to, or `replies`
    state                           retained JSON: each settable value (paused, thresholds, log level)
    sync                            retained JSON: the active bundle, its trial, the last sync outcome
    sync/events                     one JSON outcome per sync, trial decision and rollback (agent/sync)

Payload schemas: agent/deliver/schemas/{status,stats,event,crop,command,reply,sync,sync-event}.json.
"""

from __future__ import annotations

STATUS = "status"
STATS = "stats"
_FORBIDDEN = ("/", "+", "#", "\x00")


def segment(kind: str, value: object) -> str:
    """One topic level. A value that would add a level or a wildcard is refused."""
    text = str(value)
    if not text or any(ch in text for ch in _FORBIDDEN):
        raise ValueError(f"{kind} {value!r} cannot be used in an MQTT topic (empty, or contains / + # or NUL)")
    return text


def base(prefix: str, device_id: str) -> str:
    return f"{prefix}/{device_id}"


def event(line: str) -> str:
    return f"events/{segment('line', line)}"


def crop(line: str, event_id: str, index: int) -> str:
    return f"crops/{segment('line', line)}/{segment('event_id', event_id)}/{int(index)}"
