"""Load the YAML config, validate it, and report errors as `file:line dotted.path: message`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .schema import AgentConfig


class YamlLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true and false.

    PyYAML follows YAML 1.1, where yes/no/on/off are booleans too: an unquoted `on:` key (the
    webhooks' list of results) became True and a value like `no` became False. Every YAML file
    the agent reads goes through this loader.
    """


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YamlLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))


def load_yaml(text: str):
    return yaml.load(text, Loader=YamlLoader)


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where} {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """The config cannot be used. `issues` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]):
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


def _line_index(node: yaml.Node, path: tuple = (), index: dict | None = None) -> dict[tuple, int]:
    """Map each key path in the YAML tree to its 1-based line (a key's line, not its value's)."""
    index = {} if index is None else index
    index.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = path + (key_node.value,)
            index[key] = key_node.start_mark.line + 1
            _line_index(value_node, key, index)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            index[path + (i,)] = item.start_mark.line + 1
            _line_index(item, path + (i,), index)
    return index


def _data_path(loc: tuple, data: Any) -> tuple:
    """The path in the YAML data that a pydantic error location points to.

    pydantic inserts union tags into `loc` (e.g. `trigger.gpio.pin`, `pin.int`); those are
    not keys of the data and are dropped. A last element that is absent is a missing key.
    """
    path: list = []
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict) and part in node:
            path.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
        elif isinstance(node, dict) and last:
            path.append(part)
    return tuple(path)


def _nearest_line(lines: dict[tuple, int], path: tuple) -> int | None:
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return None


def _message(error: dict) -> str:
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if error["type"] == "extra_forbidden":
        message = "unknown key (check the spelling; see the example config)"
    elif error["type"] == "missing":
        message = "required field is missing"
    return message[0].lower() + message[1:] if message else message


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate a config file. Raises ConfigError naming file, line and field."""
    path = Path(path)
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue(name, None, "", f"cannot read the file: {exc.strerror or exc}")]) from None
    try:
        root = yaml.compose(text, Loader=YamlLoader)
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([ConfigIssue(name, line, "", f"not valid YAML: {problem}")]) from None
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(name, 1, "", "the file must be a YAML mapping (key: value), see the example config")])
    lines = _line_index(root)

    try:
        config = AgentConfig.model_validate(data)
    except ValidationError as exc:
        issues = []
        for error in exc.errors(include_url=False):
            data_path = _data_path(error["loc"], data)
            issues.append(
                ConfigIssue(name, _nearest_line(lines, data_path), ".".join(map(str, data_path)), _message(error))
            )
        raise ConfigError(_dedupe(issues)) from None

    issues = [
        ConfigIssue(name, _nearest_line(lines, p), ".".join(map(str, p)), message) for p, message in config.reference_issues()
    ]
    if issues:
        raise ConfigError(issues)
    return _resolve_paths(config, path.parent)


def _dedupe(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    seen, unique = set(), []
    for issue in issues:
        key = (issue.line, issue.path, issue.message)
        if key not in seen:
            seen.add(key)
            unique.append(issue)
    return unique


def _resolve_paths(config: AgentConfig, base: Path) -> AgentConfig:
    """Relative model and catalog paths are relative to the config file, not to the working directory."""
    def resolve(path: Path) -> Path:
        return path if path.is_absolute() else base / path

    models = {name: model.model_copy(update={"path": resolve(model.path)}) for name, model in config.models.items()}
    cache = resolve(config.model_cache_dir) if config.model_cache_dir else None
    c = config.control
    state_dir = config.outbox.path.parent
    control = c.model_copy(update={
        "public_keys": [resolve(k) for k in c.public_keys],
        "replay_db": resolve(c.replay_db) if c.replay_db else state_dir / "commands.db",
        "audit_log": resolve(c.audit_log) if c.audit_log else state_dir / "audit.log",
    })
    sync = config.sync
    if sync is not None:  # issue 8: keys, CA and the bundle store
        sync = sync.model_copy(update={
            "public_keys": [resolve(k) for k in sync.public_keys],
            "ca_bundle": resolve(sync.ca_bundle) if sync.ca_bundle else None,
            "state_dir": resolve(sync.state_dir) if sync.state_dir else state_dir / "bundles",
        })
    catalog = config.catalog
    if catalog is not None:
        catalog = catalog.model_copy(update={"path": resolve(catalog.path)})
    return config.model_copy(update={"models": models, "model_cache_dir": cache, "control": control, "sync": sync,
                                     "catalog": catalog})
