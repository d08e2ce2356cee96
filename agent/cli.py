"""`edge-agent` command line: run, check-config, demo."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from importlib.metadata import entry_points

from . import __version__
from .config import ConfigError, load_config

EXIT_USAGE = 2  # bad config, missing model, unusable pin: a user error, not a crash

log = logging.getLogger("agent")


class UserError(Exception):
    """Printed as one line on stderr, exit status 2, no traceback."""


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _load(path: str):
    try:
        return load_config(path)
    except ConfigError as exc:
        raise UserError(str(exc)) from None


def cmd_check_config(args) -> int:
    config = _load(args.config)
    lines = ", ".join(config.lines)
    print(f"{args.config}: OK (device {config.device.id}; lines: {lines})")
    return 0


def build_app(config, **kwargs):
    """Build the App, turning user errors (model, pin) into UserError."""
    from .app import App
    from .gpio import GpioError
    from .infer.engine import ModelLoadError

    try:
        return App(config, **kwargs)
    except (ModelLoadError, GpioError) as exc:
        raise UserError(str(exc)) from None


def cmd_run(args) -> int:
    config = _load(args.config)
    _setup_logging(args.log_level or config.log_level)
    app = build_app(config)
    stop = threading.Event()

    def _on_signal(signum, _frame):
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    app.start()
    try:
        while not stop.wait(60.0):
            log.info("health %s", app.health())
    finally:
        app.stop()
    return 0


def cmd_demo(args) -> int:
    demos = entry_points(group="edge_agent.demo")
    if not demos:
        raise UserError("the demo needs the hardware simulator (package hw_sim): run ./scripts/demo.sh from a checkout")
    demo = next(iter(demos)).load()
    return demo(args.demo_args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-agent", description="Edge vision agent")
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", "-c", required=True, help="the YAML config file")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="overrides the config's log_level")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a config file and exit (status 2 on errors)")
    check.add_argument("config")
    check.set_defaults(func=cmd_check_config)

    demo = sub.add_parser("demo", help="run the simulated inspection line end to end and print a scorecard",
                          add_help=False)
    demo.add_argument("demo_args", nargs=argparse.REMAINDER, help="options of the demo (see: edge-agent demo --help)")
    demo.set_defaults(func=cmd_demo)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
