"""What every config model shares: unknown keys are errors, values are frozen, names are ids."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # safe inside MQTT topics and file names


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
