"""`edge-agent` command line: run, check-config, doctor, provision, models, bench, demo."""

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
    """Build the App, turning user errors (model, pin, outbox path, PLC settings) into UserError."""
    from .act.http import HttpActionError
    from .act.plc import PlcError
    from .catalog import CatalogError
    from .app import App
    from .control.auth import ControlSetupError
    from .deliver.outbox import OutboxError
    from .gpio import GpioError
    from .infer.engine import ModelLoadError
    from .sync.store import StoreError

    try:
        return App(config, **kwargs)
    except (ModelLoadError, GpioError, OutboxError, ControlSetupError, PlcError, StoreError, CatalogError,
            HttpActionError) as exc:
        raise UserError(str(exc)) from None


HEALTH_LOG_S = 60.0


def cmd_run(args) -> int:
    """The daemon. Under systemd (Type=notify) it reports READY/WATCHDOG/STATUS/STOPPING through
    agent.runtime; SIGHUP reloads the config, SIGTERM and SIGINT stop it."""
    import faulthandler
    import time

    from .runtime import logging as structured_logs
    from .runtime.sdnotify import Notifier, watchdog_timeout
    from .runtime.watchdog import ServiceWatchdog

    config = _load(args.config)
    structured_logs.configure(args.log_level or config.log_level, device_id=config.device.id,
                              lines=config.lines, fmt=args.log_format)
    faulthandler.enable()  # the watchdog's SIGABRT writes every thread's stack to the log first
    notifier = Notifier.from_environment()
    watchdog = ServiceWatchdog(notifier, watchdog_timeout())
    wake = threading.Event()
    received: list[int] = []  # signals, handled by the loop below (not inside the handler)

    def _on_signal(signum, _frame):
        received.append(signum)
        wake.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _on_signal)
    restart_requested: list[bool] = []

    def _request_restart():  # the restart command: the SIGHUP path, rebuilding even if the file is unchanged
        restart_requested.append(True)
        received.append(signal.SIGHUP)
        wake.set()

    control = {"config_path": Path(args.config), "request_restart": _request_restart}
    args.control_kwargs = control  # _reload builds with the same
    try:
        app = build_app(config, **control)
    except UserError as exc:
        notifier.status(f"failed: {exc}")
        raise
    app.start()
    watchdog.attach(app)
    next_health = time.monotonic() + HEALTH_LOG_S
    try:
        while True:
            wake.wait(watchdog.tick_s)
            wake.clear()
            stop = [s for s in received if s != signal.SIGHUP]
            if stop:
                log.info("received %s: stopping", signal.Signals(stop[0]).name)
                break
            if received:
                received.clear()
                force = bool(restart_requested)
                restart_requested.clear()
                app, config = _reload(args, app, config, watchdog, force=force)
            watchdog.tick()
            if time.monotonic() >= next_health:
                log.info("health %s", app.health())
                next_health = time.monotonic() + HEALTH_LOG_S
    finally:
        watchdog.stopping()
        app.stop()
        notifier.close()
    return 0


def _reload(args, app, config, watchdog, force: bool = False):
    """SIGHUP: re-read and validate the config, then apply it by rebuilding the App.

    The old App is stopped first (the new one needs the same pins, client id and links). A config
    that does not validate is refused before anything stops; one whose App cannot be built (a
    missing model, a busy pin) is refused and the old config is started again.
    """
    from .runtime import logging as structured_logs

    watchdog.reloading()
    log.info("SIGHUP: reloading %s", args.config)
    try:
        new_config = load_config(args.config)
    except ConfigError as exc:
        log.error("reload refused, the running config stays: %s", exc)
        watchdog.reloaded(refused=str(exc).splitlines()[0])
        return app, config
    if new_config == config and not force:
        log.info("reload: %s is unchanged", args.config)
        watchdog.reloaded()
        return app, config
    app.stop()
    refused = None
    try:
        new_app = build_app(new_config, **getattr(args, "control_kwargs", {}))
    except UserError as exc:
        refused = str(exc)
        log.error("reload refused, starting the previous config again: %s", exc)
        new_config, new_app = config, build_app(config, **getattr(args, "control_kwargs", {}))
    new_app.start()
    structured_logs.configure(args.log_level or new_config.log_level, device_id=new_config.device.id,
                              lines=new_config.lines, fmt=args.log_format)
    watchdog.attach(new_app)
    watchdog.reloaded(refused)
    if refused is None:
        log.info("reloaded %s: device %s, lines %s", args.config, new_config.device.id, ", ".join(new_config.lines))
    return new_app, new_config


def cmd_ctl(args) -> int:
    from .control.ctl import run

    return run(args)


def cmd_doctor(args) -> int:
    from . import doctor

    if args.verbose:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    else:  # the table says it all; the components' own warnings would repeat it
        logging.getLogger().addHandler(logging.NullHandler())
    checks = doctor.run_checks(args.config, state_dirs=args.state_dir, min_free_mb=args.min_free_mb,
                               timeout_s=args.timeout)
    print(doctor.render(args.config, checks))
    return 0 if all(check.ok is not False for check in checks) else 1


def cmd_provision(args) -> int:
    from . import provision

    try:
        return provision.run(args)
    except provision.ProvisionError as exc:
        raise UserError(str(exc)) from None


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
        if info.adapter == "classifier":
            from .infer.cascade import crop_policy

            crop = crop_policy(info)
            source = "metadata.yaml" if "crop" in info.metadata else "default: metadata.yaml names no crop"
            print(f"crop:     {', '.join(f'{k}={v}' for k, v in crop.as_metadata().items())} ({source})")
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
        models = bench.model_rows(_find_model_file(Path(args.model)),
                                  _find_model_file(Path(args.fp32)) if args.fp32 else None)
    except ModelLoadError as exc:
        raise _model_error(exc) from None
    bench.run(models, args.seconds, args.images, rounds=args.rounds, breakdown=args.breakdown)
    return 0


def cmd_catalog_build(args) -> int:
    import sqlite3

    from . import catalog

    try:
        products = catalog.read_csv(args.csv)
        info = catalog.build(args.out, products, version=args.version)
    except catalog.CatalogError as exc:
        raise UserError(str(exc)) from None
    except (sqlite3.Error, OSError) as exc:  # a duplicate sku or label, an unwritable folder
        raise UserError(f"{args.out}: cannot build the product database: {exc}") from None
    print(f"{info.path}: {info.products} products, version {info.version}")
    return 0


def cmd_catalog_show(args) -> int:
    from . import catalog

    try:
        products = catalog.Catalog(args.path)
    except catalog.CatalogError as exc:
        raise UserError(str(exc)) from None
    try:
        info = products.info
        print(f"{info.path}: version {info.version}, schema {info.schema_version}, {info.products} products")
        for key in args.lookup or ():
            product = products.by_label(key) or products.by_sku(key) or products.by_barcode(key)
            if product is None:
                print(f"  {key}: not found (by label, sku or barcode)")
                continue
            price = f"{product.price_cents / 100:.2f} {product.currency}" + ("/kg" if product.priced_by_weight else "")
            print(f"  {key}: {product.sku} {product.name}, {price}, nominal {product.weight_g} g, label {product.label}")
    finally:
        products.close()
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
    run.add_argument("--log-format", choices=["auto", "journal", "json", "text"], default="auto",
                     help="auto (default): journald fields under systemd, text on a terminal, else JSON lines")
    run.set_defaults(func=cmd_run)

    doctor = sub.add_parser("doctor", help="check config, models, cameras, PLC, broker, clock and disk; exit 1 on a failure")
    doctor.add_argument("--config", "-c", default="/etc/edge-agent/config.yaml", help="default: /etc/edge-agent/config.yaml")
    doctor.add_argument("--state-dir", action="append", type=Path,
                        help="a directory whose disk needs free space (repeatable; default: /var/lib/edge-agent, "
                             "/var/cache/edge-agent)")
    doctor.add_argument("--min-free-mb", type=int, default=500, help="free space each disk needs (default 500)")
    doctor.add_argument("--timeout", type=float, default=3.0, help="seconds per network check (default 3)")
    doctor.add_argument("--verbose", "-v", action="store_true", help="also print the components' logs")
    doctor.set_defaults(func=cmd_doctor)

    from .provision import add_arguments as add_provision_arguments

    provision = sub.add_parser("provision", help="make this box (or --root DIR) an edge device: user, dirs, identity, "
                                                 "config, unit; idempotent")
    add_provision_arguments(provision)
    provision.set_defaults(func=cmd_provision)

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

    catalog = sub.add_parser("catalog", help="product database tools (the checkout line's catalog.path)")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True)
    build = catalog_sub.add_parser("build", help="build a product database from a CSV file")
    build.add_argument("out", type=Path, help="the SQLite file to write (replaced)")
    build.add_argument("--csv", type=Path, required=True,
                       help="header: sku,name,price_cents,currency,priced_by_weight,weight_g,barcode,label")
    build.add_argument("--version", default="factory", help="the database's version (default: factory)")
    build.set_defaults(func=cmd_catalog_build)
    show = catalog_sub.add_parser("show", help="check a product database and look products up")
    show.add_argument("path", type=Path)
    show.add_argument("lookup", nargs="*", help="classifier labels, skus or barcodes to look up")
    show.set_defaults(func=cmd_catalog_show)

    bench_cmd = sub.add_parser("bench", help="pipeline FPS and latency beside OpenVINO's benchmark_app, INT8 vs FP32")
    bench_cmd.add_argument("model", help="the (INT8) IR folder or .xml")
    bench_cmd.add_argument("--fp32", help="the FP32 IR of the same model, to compare")
    bench_cmd.add_argument("--seconds", type=int, default=5, help="seconds per measurement and round (default 5)")
    bench_cmd.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are shown (default 3)")
    bench_cmd.add_argument("--images", type=Path, help="a folder of JPEG/PNG frames (default: synthetic 640x480)")
    bench_cmd.add_argument("--breakdown", action="store_true",
                           help="also measure the pipeline without decode + NMS, and with frames resized beforehand")
    bench_cmd.set_defaults(func=cmd_bench)

    demo = sub.add_parser("demo", help="run a simulated line (inspection, or --use-case checkout or surveillance) end to end and print a scorecard",
                          add_help=False)
    demo.add_argument("demo_args", nargs=argparse.REMAINDER, help="options of the demo (see: edge-agent demo --help)")
    demo.set_defaults(func=cmd_demo)

    from .control.ctl import add_arguments as add_ctl_arguments

    ctl = sub.add_parser("ctl", help="send a command to a device through the broker and print the reply")
    add_ctl_arguments(ctl)
    ctl.set_defaults(func=cmd_ctl)

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"]:
        # The demo parses its own options: argparse's REMAINDER would reject "--parts" here.
        args = argparse.Namespace(func=cmd_demo, demo_args=argv[1:])
    else:
        args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
