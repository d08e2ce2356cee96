"""`edge-agent` command line: run, check-config, demo."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from importlib.metadata import entry_points
from pathlib import Path

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


def _model_error(exc) -> UserError:
    return UserError(str(exc))


def cmd_models_inspect(args) -> int:
    import numpy as np

    from .infer.engine import Classifier, Detector, Model, ModelLoadError

    try:
        model = Model(args.path, device=args.device)
        info = model.info
        print(f"model:    {info.path}")
        print(f"adapter:  {info.adapter}")
        print(f"input:    {info.input_size[1]}x{info.input_size[0]} (w x h)")
        for line in info.inputs:
            print(f"  in   {line}")
        for line in info.outputs:
            print(f"  out  {line}")
        if info.names:
            print("classes:  " + ", ".join(f"{k}={v}" for k, v in sorted(info.names.items())))
        frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
        if args.image:
            import cv2

            frame = cv2.imread(str(args.image), cv2.IMREAD_COLOR)
            if frame is None:
                raise UserError(f"{args.image}: not a readable image")
        if info.adapter == "classifier":
            runner = Classifier(model)
            result = runner.classify([frame], k=min(3, len(info.names) or 1))[0]
            summary = ", ".join(f"{label} {p:.3f}" for label, p in result)
        else:
            runner = Detector(model)
            found = runner.detect(frame, args.conf)
            summary = f"{len(found)} detection(s) at conf >= {args.conf}" + "".join(
                f"\n    {d.label} {d.score:.3f} [{', '.join(f'{v:.0f}' for v in d.box)}]" for d in found[:10])
        source = args.image or "a random 640x480 frame"
        print(f"ran once on {source} in {runner.last_infer_ms:.1f} ms: {summary}")
    except ModelLoadError as exc:
        raise _model_error(exc) from None
    return 0


def cmd_bench(args) -> int:
    from . import bench
    from .infer.engine import ModelLoadError, _find_model_file

    try:
        models = [("int8", _find_model_file(Path(args.model)))]
        if args.fp32:
            models.append(("fp32", _find_model_file(Path(args.fp32))))
    except ModelLoadError as exc:
        raise _model_error(exc) from None
    bench.run(models, args.seconds, args.images)
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

    models = sub.add_parser("models", help="model tools")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    inspect = models_sub.add_parser("inspect", help="print a model's inputs, outputs, adapter and classes, and run it once")
    inspect.add_argument("path", help="an IR folder, .xml or .onnx file")
    inspect.add_argument("--image", type=Path, help="run on this image instead of a random frame")
    inspect.add_argument("--device", default="CPU")
    inspect.add_argument("--conf", type=float, default=0.25)
    inspect.set_defaults(func=cmd_models_inspect)

    bench_cmd = sub.add_parser("bench", help="pipeline FPS and latency beside OpenVINO's benchmark_app, INT8 vs FP32")
    bench_cmd.add_argument("model", help="the (INT8) IR folder or .xml")
    bench_cmd.add_argument("--fp32", help="the FP32 IR of the same model, to compare")
    bench_cmd.add_argument("--seconds", type=int, default=15, help="seconds per measurement (default 15)")
    bench_cmd.add_argument("--images", type=Path, help="a folder of JPEG/PNG frames (default: synthetic 640x480)")
    bench_cmd.set_defaults(func=cmd_bench)

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
