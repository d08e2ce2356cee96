"""The config file as config/set changes it: validated, written atomically, the previous kept.

A new config is written to a temporary file beside the real one and validated there with
load_config, the same schema and file:line messages as at startup. Only then is the current
file copied to `NAME.prev` and the new one renamed over it (fsync'd), so a crash leaves either
the old or the new file, never half of one.

YAML comments in the file are not kept by a config/set: the file is written from data.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from pathlib import Path

import yaml

from ..config import ConfigError, load_config
from ..config.loader import load_yaml
from ..config.schema import AgentConfig

# Settings a running agent takes without a restart: the rule is replaced atomically per line,
# the log level is a logger setting. Everything else rebuilds objects: restart.
LIVE_SAFE = ("log_level", "lines.*.default_threshold", "lines.*.thresholds", "lines.*.thresholds.*")


class ConfigFileError(Exception):
    def __init__(self, code: str, message: str, issues: list[str] | None = None):
        super().__init__(message)
        self.code = code
        self.issues = issues or []


class ConfigFile:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.previous_path = self.path.with_name(self.path.name + ".prev")

    def read(self) -> dict:
        try:
            data = load_yaml(self.path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigFileError("failed", f"cannot read {self.path}: {exc}") from None
        return data if isinstance(data, dict) else {}

    def write(self, raw: dict) -> AgentConfig:
        """Validate raw as a config file and put it in place. Raises ConfigFileError."""
        tmp = self.path.with_name(f".{self.path.name}.new")
        try:
            text = yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigFileError("failed", f"cannot write {tmp}: {exc}") from None
        try:
            config = load_config(tmp)
        except ConfigError as exc:
            tmp.unlink(missing_ok=True)
            issues = [str(i).replace(str(tmp), "config", 1) for i in exc.issues]
            raise ConfigFileError("invalid_config", "the new config does not validate; nothing was changed: "
                                  + "; ".join(issues), issues) from None
        try:
            if self.path.exists():
                shutil.copy2(self.path, self.previous_path)
            os.replace(tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ConfigFileError("failed", f"cannot replace {self.path}: {exc}") from None
        return config


def _flatten(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict) and value:
        out: dict[str, object] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def changed_paths(old: AgentConfig, new: AgentConfig) -> list[str]:
    a, b = _flatten(old.model_dump(mode="json")), _flatten(new.model_dump(mode="json"))
    changed = sorted(k for k in a.keys() | b.keys() if a.get(k, object()) != b.get(k, object()))
    # An empty mapping is a leaf: {} -> {"x": 1} changes "t" and "t.x"; name only "t.x".
    return [k for k in changed if not any(other.startswith(k + ".") for other in changed)]


def live_safe(path: str) -> bool:
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in LIVE_SAFE)
