"""`edge-agent ctl DEVICE COMMAND [KEY=VALUE ...]`: send one command through a broker, print the reply.

    edge-agent ctl --host broker.local line7 status
    edge-agent ctl --host broker.local --key ops.pem line7 thresholds/set line=inspect default=0.5
    edge-agent ctl --host broker.local line7 config/set --args '{"patch": {"log_level": "DEBUG"}}'
    edge-agent ctl --keygen ops.pem          # writes ops.pem (private) and ops.pem.pub (for the device)

A KEY=VALUE value is read as JSON when it parses (0.5, true, null, {"a": 1}), else as a string.
With --key the command is signed (Ed25519) with a fresh cmd_id and a validity of --validity s.
Exit status: 0 the device said ok, 1 it refused, 3 no reply in time, 2 a usage or connection error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

from .auth import ControlSetupError, generate_keypair, load_private_key, sign

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NO_REPLY = 0, 1, 2, 3


def build_request(device_id: str, command: str, args: dict, *, key=None, validity_s: float = 60.0,
                  request_id: str | None = None, now: float | None = None) -> dict:
    """The JSON body of one command; signed when key (an Ed25519PrivateKey) is given."""
    now = time.time() if now is None else now
    body: dict = {"args": args, "cmd_id": str(uuid.uuid4()), "issued_at": round(now, 3),
                  "expires_at": round(now + validity_s, 3)}
    if request_id is not None:
        body["request_id"] = request_id
    return sign(key, device_id, command, body) if key is not None else body


def parse_params(params: list[str], args_json: str | None) -> dict:
    args: dict = {}
    if args_json:
        loaded = json.loads(args_json)
        if not isinstance(loaded, dict):
            raise ValueError("--args must be a JSON object")
        args.update(loaded)
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{item!r}: arguments are KEY=VALUE")
        try:
            args[key] = json.loads(value)
        except ValueError:
            args[key] = value
    return args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("device", nargs="?", help="the device id (mqtt topic level after the prefix)")
    parser.add_argument("cmd", nargs="?", metavar="COMMAND", help="ping, status, config/get, config/set, line/pause, "
                        "line/resume, trigger, snapshot, thresholds/set, sync/now, model/rollback, log/level, restart")
    parser.add_argument("params", nargs="*", metavar="KEY=VALUE", help="the command's arguments")
    parser.add_argument("--args", dest="args_json", help="the arguments as one JSON object (merged before KEY=VALUE)")
    parser.add_argument("--host", default="localhost", help="MQTT broker (default localhost)")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--prefix", default="edge", help="topic prefix (default edge)")
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--tls-ca", type=Path, help="CA file: use TLS")
    parser.add_argument("--key", type=Path, help="sign with this Ed25519 private key (PEM)")
    parser.add_argument("--validity", type=float, default=60.0, help="seconds the signed command stays valid (default 60)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the reply (default 10)")
    parser.add_argument("--keygen", type=Path, metavar="PATH", help="write a new key pair to PATH and PATH.pub, and exit")


def run(args: argparse.Namespace, out=None, err=None) -> int:
    from ..deliver.mqtt import MqttRequester

    out, err = out or sys.stdout, err or sys.stderr
    if args.keygen:
        try:
            private, public = generate_keypair(args.keygen)
        except ControlSetupError as exc:
            print(exc, file=err)
            return EXIT_USAGE
        print(f"private key: {private} (keep it secret)\npublic key:  {public} (list it in the device's "
              f"control.public_keys)", file=out)
        return EXIT_OK
    if not args.device or not args.cmd:
        print("usage: edge-agent ctl DEVICE COMMAND [KEY=VALUE ...] (see edge-agent ctl --help)", file=err)
        return EXIT_USAGE
    try:
        params = parse_params(args.params, args.args_json)
        key = load_private_key(args.key) if args.key else None
    except (ValueError, ControlSetupError) as exc:
        print(exc, file=err)
        return EXIT_USAGE
    base = f"{args.prefix}/{args.device}"
    body = build_request(args.device, args.cmd, params, key=key, validity_s=args.validity)
    reply_topic = f"{base}/replies/ctl-{uuid.uuid4().hex[:12]}"
    try:
        with MqttRequester(args.host, args.port, reply_topic=reply_topic, username=args.username,
                           password=args.password, tls_ca=args.tls_ca) as requester:
            raw = requester.request(f"{base}/cmd/{args.cmd}", json.dumps(body).encode(), timeout_s=args.timeout)
    except ConnectionError as exc:
        print(exc, file=err)
        return EXIT_USAGE
    if raw is None:
        print(f"no reply from {args.device} within {args.timeout:g} s (is it online? check {base}/status)", file=err)
        return EXIT_NO_REPLY
    try:
        reply = json.loads(raw)
    except ValueError:
        print(f"the reply is not JSON: {raw[:200]!r}", file=err)
        return EXIT_REFUSED
    print(json.dumps(reply, indent=2, ensure_ascii=False), file=out)
    return EXIT_OK if reply.get("ok") else EXIT_REFUSED
