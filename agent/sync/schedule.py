"""When the nightly sync runs: a random moment inside a local-time window, once per window."""

from __future__ import annotations

import datetime
import random

DAY_MIN = 24 * 60


def parse_window(text: str) -> tuple[int, int]:
    """"02:00-04:00" -> (120, 240), minutes after local midnight; it may run past midnight ("23:30-01:00")."""
    try:
        start, end = text.split("-")
        minutes = []
        for part in (start, end):
            hours, mins = part.strip().split(":")
            if not (0 <= int(hours) <= 23 and 0 <= int(mins) <= 59):
                raise ValueError
            minutes.append(int(hours) * 60 + int(mins))
    except ValueError:
        raise ValueError(f"{text!r}: expected HH:MM-HH:MM in local time, e.g. 02:00-04:00") from None
    if minutes[0] == minutes[1]:
        raise ValueError(f"{text!r}: the window is empty")
    return minutes[0], minutes[1]


def window_length(window: tuple[int, int]) -> datetime.timedelta:
    return datetime.timedelta(minutes=(window[1] - window[0]) % DAY_MIN)


def next_run(now: datetime.datetime, window: tuple[int, int], rng: random.Random,
             done_window_start: datetime.datetime | None) -> tuple[datetime.datetime, datetime.datetime]:
    """(when to sync, the start of the window that is in): a random moment in the window under way,
    unless it has had its sync already, else in the next one. Times are naive local time."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    for day in (-1, 0, 1, 2):
        start = midnight + datetime.timedelta(days=day, minutes=window[0])
        end = start + window_length(window)
        if end <= now or start == done_window_start:
            continue
        earliest = max(start, now)
        return earliest + (end - earliest) * rng.random(), start
    raise AssertionError("unreachable: one of the next two windows is always ahead")
