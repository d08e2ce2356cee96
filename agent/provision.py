"""`edge-agent provision`: turn a fresh Debian/Ubuntu box (or a Jetson) into an edge device.

Steps, each idempotent (a second run reports every step `unchanged` and writes nothing):

1. the service user and its groups, declared in /etc/sysusers.d/edge-agent.conf and created
   with systemd-sysusers;
2. the directories, with their owners and modes (state, cache and logs belong to the user;
   the credential store /etc/credstore is root-only);
3. the device identity: an EC P-256 (or Ed25519) key pair, kept in the credential store with
   mode 0600, and a CSR for the MQTT client certificate (CN = the device id, O = the site);
4. the signed client certificate and the CA, when given (the certificate must belong to the
   device's key and, with a CA, be issued by it);
5. the config, rendered from a fleet template plus this device's values and validated like
   `check-config` before it is written;
6. the systemd unit, installed and enabled;
7. `edge-agent doctor` on the result.

`--root DIR` installs into DIR as if it were `/` (like DESTDIR): nothing outside DIR is touched,
no user is created and no owner is changed (the sysusers.d file and the unit's
StateDirectory=/CacheDirectory=/LogsDirectory= take care of them at the first boot), and the
doctor is skipped. Tests use it; image builders can too.

Device values come from `--values FILE` (YAML) and flags, the flags winning:

    device_id: line1-box1            # --device-id
    site: plant-a                    # --site
    broker_url: mqtts://broker.example.com:8883   # --broker-url; mqtt:// is plain TCP
    plc: 192.168.10.20:502           # --plc HOST[:PORT]
    cameras:                         # --camera NAME=URL (repeatable)
      cam0: http://192.168.10.30/snapshot.jpg
    sync_url: https://updates.example.com/fleet/line1/manifest.json   # --sync-url: nightly bundles
    sync_window: 02:00-04:00         # --sync-window (local time)

The template is a config with `${name}` placeholders; see provisioning/fleet.template.yaml.
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from .config.loader import load_yaml
from .config.schema import CREDENTIAL_PREFIX

USER = "edge-agent"
GROUPS = ("video", "gpio", "dialout")
UNIT_NAME = "edge-agent.service"
KEY_CREDENTIAL = "edge-agent.mqtt-client.key"
CERT_CREDENTIAL = "edge-agent.mqtt-client.pem"
CA_CREDENTIAL = "edge-agent.mqtt-ca.pem"
_REPO = Path(__file__).resolve().parents[1]
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.-]*)\}")


class ProvisionError(Exception):
    """Something the operator must fix; the message says what."""


@dataclass(frozen=True)
class Layout:
    """Where everything goes on the device, as absolute target paths; `root` prefixes them all."""

    root: Path = Path("/")
    prefix: str = "/opt/edge-agent"
    config_dir: str = "/etc/edge-agent"
    credstore: str = "/etc/credstore"
    state_dir: str = "/var/lib/edge-agent"
    cache_dir: str = "/var/cache/edge-agent"
    logs_dir: str = "/var/log/edge-agent"
    unit_dir: str = "/etc/systemd/system"
    sysusers_dir: str = "/etc/sysusers.d"

    @property
    def is_live(self) -> bool:
        """Installing into the running system (not into --root)."""
        return self.root.resolve() == Path("/")

    def host(self, target: str) -> Path:
        """The path on this machine of a target path."""
        return self.root / target.lstrip("/")

    @property
    def config_file(self) -> str:
        return f"{self.config_dir}/config.yaml"

    @property
    def csr_file(self) -> str:
        return f"{self.config_dir}/mqtt-client.csr"

    @property
    def models_dir(self) -> str:
        return f"{self.prefix}/models"


@dataclass
class Report:
    steps: list[tuple[str, str, str]] = field(default_factory=list)  # (action, what, note)

    def add(self, action: str, what: str, note: str = "") -> None:
        self.steps.append((action, what, note))

    @property
    def changed(self) -> int:
        return sum(action not in ("unchanged", "skipped") for action, _, _ in self.steps)

    def render(self) -> str:
        width = max((len(action) for action, _, _ in self.steps), default=0)
        return "\n".join(f"  {action:<{width}}  {what}" + (f"  ({note})" if note else "") for action, what, note in self.steps)


# -- the command ---------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--template", type=Path, default=_REPO / "provisioning" / "fleet.template.yaml",
                        help="the fleet's config template (default: provisioning/fleet.template.yaml)")
    parser.add_argument("--values", type=Path, help="this device's values (YAML: device_id, site, broker_url, plc, cameras)")
    parser.add_argument("--device-id")
    parser.add_argument("--site")
    parser.add_argument("--broker-url", help="mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (TLS)")
    parser.add_argument("--plc", help="the PLC's HOST[:PORT] (Modbus TCP, port 502 by default)")
    parser.add_argument("--camera", action="append", default=[], metavar="NAME=URL", help="a camera's URL (repeatable)")
    parser.add_argument("--cert", type=Path, help="the signed MQTT client certificate (PEM) to install")
    parser.add_argument("--ca", type=Path, help="the CA certificate (PEM) of the broker and the client certificate")
    parser.add_argument("--operator-key", action="append", default=[], type=Path, metavar="FILE",
                        help="an operator's Ed25519 public key (edge-agent ctl --keygen): once one is installed the "
                             "device accepts only commands signed by an installed key (repeatable)")
    parser.add_argument("--bundle-key", action="append", default=[], type=Path, metavar="FILE",
                        help="the fleet's Ed25519 bundle-signing public key (models/make_bundle.py --keygen): sync "
                             "activates only bundles signed by an installed key (repeatable)")
    parser.add_argument("--sync-url", help="the sync manifest's URL (https://...); needs --bundle-key")
    parser.add_argument("--sync-window", help="the nightly sync window, local time (default 02:00-04:00)")
    parser.add_argument("--key-type", choices=["ec-p256", "ed25519"], default="ec-p256",
                        help="for a new device key (default ec-p256, which every broker accepts)")
    parser.add_argument("--unit", type=Path, default=_REPO / "systemd" / UNIT_NAME, help="the unit file to install")
    parser.add_argument("--models-dir", help=f"where the models are on the device (default {Layout().models_dir})")
    parser.add_argument("--root", type=Path, default=Path("/"), help="install under DIR as if it were / (DESTDIR)")
    parser.add_argument("--no-enable", action="store_true", help="install the unit but do not enable it")
    parser.add_argument("--no-doctor", action="store_true", help="skip `edge-agent doctor` at the end")


def run(args: argparse.Namespace) -> int:
    layout = Layout(root=args.root)
    values = device_values(args)
    if not layout.is_live and not layout.root.is_dir():
        raise ProvisionError(f"--root {layout.root}: no such directory")
    if layout.is_live and os.geteuid() != 0:
        raise ProvisionError("provisioning this machine needs root: sudo edge-agent provision ... "
                             "(or --root DIR to build a tree elsewhere)")
    report = Report()
    provision(layout, values, report, template=args.template, unit=args.unit, cert=args.cert, ca=args.ca,
              key_type=args.key_type, models_dir=args.models_dir, enable=not args.no_enable,
              operator_keys=args.operator_key, bundle_keys=args.bundle_key)
    print(f"edge-agent provision: device {values['device_id']} into {layout.root}")
    print(report.render())
    print(f"{report.changed} change(s)")
    if not layout.host(f"{layout.credstore}/{CERT_CREDENTIAL}").exists():
        print(f"next: have the fleet CA sign {layout.csr_file}, then run provision again with --cert FILE --ca FILE")
    if not installed_operator_keys(layout):
        print("next: commands are accepted unsigned until an operator key is installed: run provision again with "
              "--operator-key FILE.pub (make one with edge-agent ctl --keygen FILE)")
    if layout.is_live and not args.no_doctor:
        from . import doctor

        checks = doctor.run_checks(layout.config_file)
        print(doctor.render(layout.config_file, checks))
        return 0 if all(check.ok is not False for check in checks) else 1
    return 0


def device_values(args: argparse.Namespace) -> dict:
    values: dict = {}
    if args.values:
        try:
            loaded = load_yaml(args.values.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ProvisionError(f"{args.values}: cannot read the device values: {exc}") from None
        if not isinstance(loaded, dict):
            raise ProvisionError(f"{args.values}: expected a mapping (device_id: ..., site: ...)")
        known = ("device_id", "site", "broker_url", "plc", "cameras", "sync_url", "sync_window")
        unknown = set(loaded) - set(known)
        if unknown:
            raise ProvisionError(f"{args.values}: unknown key(s) {', '.join(sorted(unknown))} "
                                 f"(known: {', '.join(known)})")
        values.update(loaded)
    for key in ("device_id", "site", "broker_url", "plc", "sync_url", "sync_window"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    cameras = dict(values.get("cameras") or {})
    for item in args.camera:
        name, sep, url = item.partition("=")
        if not sep or not name or not url:
            raise ProvisionError(f"--camera {item!r}: expected NAME=URL")
        cameras[name] = url
    values["cameras"] = cameras
    for key in ("device_id", "broker_url", "plc"):
        if not values.get(key):
            raise ProvisionError(f"{key} is missing: pass --{key.replace('_', '-')} or set it in --values FILE")
    return values


def provision(layout: Layout, values: dict, report: Report, *, template: Path, unit: Path,
              cert: Path | None = None, ca: Path | None = None, key_type: str = "ec-p256",
              models_dir: str | None = None, enable: bool = True, operator_keys=(), bundle_keys=()) -> None:
    """All the steps. The config is rendered and validated before anything is written."""
    for path, what in ((template, "template"), (unit, "unit file")):
        if not path.is_file():
            raise ProvisionError(f"{what} not found: {path}")
    for path, what in ((cert, "--cert"), (ca, "--ca")):
        if path is not None and not path.is_file():
            raise ProvisionError(f"{what} {path}: no such file")
    install_user(layout, report)
    install_directories(layout, report)
    key = install_identity(layout, values, report, key_type)
    install_certificates(layout, key, report, cert, ca)
    install_operator_keys(layout, report, operator_keys)
    install_public_keys(layout, report, bundle_keys, "bundle-keys", "--bundle-key", "bundle-signing key")
    install_config(layout, values, report, template, models_dir)
    install_unit(layout, report, unit, enable)


# -- 1. user -------------------------------------------------------------------------------

def sysusers_conf(layout: Layout) -> str:
    lines = [f"# {USER}: the service user and the device groups it needs (written by edge-agent provision)"]
    lines += [f"g {group} -" for group in GROUPS]
    lines.append(f'u {USER} - "Edge vision agent" {layout.state_dir} /usr/sbin/nologin')
    lines += [f"m {USER} {group}" for group in GROUPS]
    return "\n".join(lines) + "\n"


def install_user(layout: Layout, report: Report) -> None:
    conf = f"{layout.sysusers_dir}/{USER}.conf"
    _write(layout, conf, sysusers_conf(layout).encode(), 0o644, report)
    if not layout.is_live:
        report.add("skipped", f"user {USER}", "--root: systemd-sysusers creates it at the first boot")
        return
    existed = _user_exists(USER)
    missing_groups = [g for g in GROUPS if not _user_in_group(USER, g)] if existed else list(GROUPS)
    if existed and not missing_groups:
        report.add("unchanged", f"user {USER}", f"groups {', '.join(GROUPS)}")
        return
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is None:
        raise ProvisionError("systemd-sysusers is missing (package systemd); it creates the service user")
    _run([sysusers, str(layout.host(conf))])
    report.add("updated" if existed else "created", f"user {USER}", f"groups {', '.join(GROUPS)}")


# -- 2. directories ------------------------------------------------------------------------

def directories(layout: Layout) -> list[tuple[str, int, str | None]]:
    """(target path, mode, owner) of each directory; owner None means root."""
    return [
        (layout.config_dir, 0o755, None),
        (layout.credstore, 0o700, None),
        (layout.state_dir, 0o750, USER),
        (layout.cache_dir, 0o750, USER),
        (layout.logs_dir, 0o750, USER),
        (layout.prefix, 0o755, None),
    ]


def install_directories(layout: Layout, report: Report) -> None:
    for target, mode, owner in directories(layout):
        path = layout.host(target)
        action = "unchanged"
        if not path.is_dir():
            path.mkdir(parents=True, mode=mode)
            action = "created"
        if path.stat().st_mode & 0o7777 != mode:
            path.chmod(mode)
            action = "created" if action == "created" else "updated"
        if _chown(layout, path, owner):
            action = "created" if action == "created" else "updated"
        report.add(action, f"{target}/", f"{mode:04o}" + (f" {owner}" if owner else ""))


# -- 3. identity ---------------------------------------------------------------------------

def install_identity(layout: Layout, values: dict, report: Report, key_type: str):
    """The device's private key (made once, never replaced) and a CSR for it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    key_target = f"{layout.credstore}/{KEY_CREDENTIAL}"
    key_path = layout.host(key_target)
    if key_path.exists():
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise ProvisionError(f"{key_path}: not a readable unencrypted PEM private key ({exc}); "
                                 "move it away to make a new device identity") from None
        _fix_mode(layout, key_target, 0o600, report, "device key")
    else:
        key = ec.generate_private_key(ec.SECP256R1()) if key_type == "ec-p256" else ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        _write(layout, key_target, pem, 0o600, report, note=f"device key, {key_type}")
    _write_csr(layout, key, values, report)
    return key


def _subject(values: dict):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    names = [x509.NameAttribute(NameOID.COMMON_NAME, str(values["device_id"]))]
    if values.get("site"):
        names.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, str(values["site"])))
    return x509.Name(names)


def _write_csr(layout: Layout, key, values: dict, report: Report) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    path = layout.host(layout.csr_file)
    subject = _subject(values)
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if path.exists():
        try:
            existing = x509.load_pem_x509_csr(path.read_bytes())
            same_key = existing.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == public
            if same_key and existing.subject == subject and existing.is_signature_valid:
                _fix_mode(layout, layout.csr_file, 0o644, report, "CSR")
                return
        except ValueError:
            pass
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = (x509.CertificateSigningRequestBuilder().subject_name(subject)
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(str(values["device_id"]))]), critical=False)
           .sign(key, algorithm))
    _write(layout, layout.csr_file, csr.public_bytes(serialization.Encoding.PEM), 0o644, report,
           note="CSR for the MQTT client certificate")


# -- 4. certificates -----------------------------------------------------------------------

def install_certificates(layout: Layout, key, report: Report, cert: Path | None, ca: Path | None) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    ca_cert = None
    if ca is not None:
        ca_cert = _load_cert(ca, "--ca")
        _write(layout, f"{layout.credstore}/{CA_CREDENTIAL}", ca.read_bytes(), 0o644, report, note="CA")
    if cert is None:
        return
    client = _load_cert(cert, "--cert")
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if client.public_key().public_bytes(*der) != key.public_key().public_bytes(*der):
        raise ProvisionError(f"--cert {cert}: the certificate is for another key, not this device's "
                             f"({layout.csr_file} is the request to sign)")
    if ca_cert is None and layout.host(f"{layout.credstore}/{CA_CREDENTIAL}").exists():
        ca_cert = x509.load_pem_x509_certificate(layout.host(f"{layout.credstore}/{CA_CREDENTIAL}").read_bytes())
    if ca_cert is not None:
        try:
            client.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError) as exc:
            raise ProvisionError(f"--cert {cert} was not issued by the CA {ca or 'installed'}: {exc}") from None
    _write(layout, f"{layout.credstore}/{CERT_CREDENTIAL}", cert.read_bytes(), 0o644, report,
           note="MQTT client certificate")


def _load_cert(path: Path, flag: str):
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as exc:
        raise ProvisionError(f"{flag} {path}: not a PEM certificate ({exc})") from None


# -- 5. config -----------------------------------------------------------------------------

def install_operator_keys(layout: Layout, report: Report, keys) -> None:
    """Operators' command-signing public keys, into {config_dir}/operators/ (checked first)."""
    install_public_keys(layout, report, keys, "operators", "--operator-key", "operator key")


def install_public_keys(layout: Layout, report: Report, keys, folder: str, flag: str, note: str) -> None:
    """Ed25519 public keys into {config_dir}/{folder}/, each checked before any is written."""
    from .control.auth import ControlSetupError, load_public_key

    for path in keys:
        try:
            load_public_key(path)
        except ControlSetupError as exc:
            raise ProvisionError(f"{flag} {path}: {exc}") from None
    for path in keys:
        _write(layout, f"{layout.config_dir}/{folder}/{path.name}", path.read_bytes(), 0o644, report, note=note)


def installed_operator_keys(layout: Layout) -> list[str]:
    return installed_public_keys(layout, "operators")


def installed_public_keys(layout: Layout, folder: str) -> list[str]:
    path = layout.host(f"{layout.config_dir}/{folder}")
    return sorted(f"{layout.config_dir}/{folder}/{p.name}" for p in path.glob("*") if p.is_file()) \
        if path.is_dir() else []


def sync_section(layout: Layout, values: dict) -> dict | None:
    """The config's sync section (issue 8): None without a sync URL."""
    url = values.get("sync_url")
    if not url:
        return None
    if not str(url).startswith("https://"):
        raise ProvisionError(f"sync_url {url!r}: expected https://... (the manifest's URL)")
    keys = installed_public_keys(layout, "bundle-keys")
    if not keys:
        raise ProvisionError("sync_url needs the fleet's bundle-signing public key: pass --bundle-key FILE.pub")
    return {"manifest_url": str(url), "public_keys": keys, "window": str(values.get("sync_window") or "02:00-04:00"),
            "state_dir": f"{layout.state_dir}/bundles"}


def template_variables(layout: Layout, values: dict, models_dir: str | None = None) -> dict:
    broker = urlsplit(str(values["broker_url"]))
    if broker.scheme not in ("mqtt", "mqtts") or not broker.hostname:
        raise ProvisionError(f"broker_url {values['broker_url']!r}: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    tls = None
    if broker.scheme == "mqtts":
        if not layout.host(f"{layout.credstore}/{CA_CREDENTIAL}").exists():
            raise ProvisionError(f"broker_url {values['broker_url']}: TLS needs the CA that signed the broker's "
                                 "certificate: pass --ca FILE")
        tls = {"ca": f"{CREDENTIAL_PREFIX}{CA_CREDENTIAL}"}
        if layout.host(f"{layout.credstore}/{CERT_CREDENTIAL}").exists():
            tls |= {"cert": f"{CREDENTIAL_PREFIX}{CERT_CREDENTIAL}", "key": f"{CREDENTIAL_PREFIX}{KEY_CREDENTIAL}"}
    plc_host, _, plc_port = str(values["plc"]).rpartition(":") if ":" in str(values["plc"]) else (values["plc"], "", "502")
    if not plc_host or not str(plc_port).isdigit():
        raise ProvisionError(f"plc {values['plc']!r}: expected HOST or HOST:PORT")
    variables = {
        "device_id": str(values["device_id"]),
        "site": str(values.get("site") or ""),
        "mqtt_host": broker.hostname,
        "mqtt_port": broker.port or (8883 if tls else 1883),
        "mqtt_tls": tls,
        "plc_host": plc_host,
        "plc_port": int(plc_port),
        "models_dir": os.path.abspath(models_dir) if models_dir else layout.models_dir,
        "cache_dir": layout.cache_dir,
        "state_dir": layout.state_dir,
        "logs_dir": layout.logs_dir,
        "operator_keys": installed_operator_keys(layout),
        "require_signature": bool(installed_operator_keys(layout)),
        "sync": sync_section(layout, values),
    }
    variables |= {f"camera.{name}": str(url) for name, url in values.get("cameras", {}).items()}
    return variables


def render_config(template_text: str, variables: dict, source: str = "template") -> str:
    """Fill `${name}` placeholders in the template's YAML tree. A scalar that is exactly one
    placeholder takes the value with its type (a port stays a number, TLS a mapping or null);
    inside a longer string the value is inserted as text."""
    try:
        tree = load_yaml(template_text)
    except yaml.YAMLError as exc:
        raise ProvisionError(f"{source}: not valid YAML: {exc}") from None
    used: set[str] = set()

    def fill(node, where: str):
        if isinstance(node, dict):
            return {key: fill(value, f"{where}.{key}" if where else str(key)) for key, value in node.items()}
        if isinstance(node, list):
            return [fill(value, f"{where}[{i}]") for i, value in enumerate(node)]
        if not isinstance(node, str):
            return node
        names = _PLACEHOLDER.findall(node)
        for name in names:
            if name not in variables:
                hint = " (give it with --camera NAME=URL)" if name.startswith("camera.") else ""
                raise ProvisionError(f"{source}: {where} needs ${{{name}}}, which this device has no value for{hint}")
            used.add(name)
        whole = _PLACEHOLDER.fullmatch(node)
        if whole:
            return variables[whole.group(1)]
        return _PLACEHOLDER.sub(lambda m: str(variables[m.group(1)]), node)

    rendered = fill(tree, "")
    unused = sorted(name for name in variables if name.startswith("camera.") and name not in used)
    if unused:
        raise ProvisionError(f"{source} has no camera {', '.join(n.split('.', 1)[1] for n in unused)} "
                             f"(its placeholders: {', '.join(sorted(n for n in used if n.startswith('camera.'))) or 'none'})")
    header = (f"# Rendered by `edge-agent provision` from {Path(source).name} and this device's values.\n"
              "# Change the template or the values and provision again, rather than editing this file.\n")
    return header + yaml.safe_dump(rendered, sort_keys=False, default_flow_style=False)


def install_config(layout: Layout, values: dict, report: Report, template: Path, models_dir: str | None) -> None:
    text = render_config(template.read_text(encoding="utf-8"), template_variables(layout, values, models_dir),
                         str(template))
    _validate(layout, text)
    _write(layout, layout.config_file, text.encode(), 0o640, report, group=USER, note="config")


def _validate(layout: Layout, text: str) -> None:
    """The same validation as check-config, with credentials looked up in this root's store."""
    from .config import ConfigError, load_config

    with tempfile.TemporaryDirectory(prefix="edge-agent-config-") as tmp:
        candidate = Path(tmp) / "config.yaml"
        candidate.write_text(text, encoding="utf-8")
        with _credentials_directory(layout.host(layout.credstore)):
            try:
                load_config(candidate)
            except ConfigError as exc:
                raise ProvisionError(f"the rendered config does not validate, nothing was installed from it:\n{exc}") from None


@contextmanager
def _credentials_directory(path: Path) -> Iterator[None]:
    # `credential:NAME` resolves through $CREDENTIALS_DIRECTORY, as in the service.
    saved = os.environ.get("CREDENTIALS_DIRECTORY")
    os.environ["CREDENTIALS_DIRECTORY"] = str(path)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("CREDENTIALS_DIRECTORY", None)
        else:
            os.environ["CREDENTIALS_DIRECTORY"] = saved


# -- 6. unit -------------------------------------------------------------------------------

def install_unit(layout: Layout, report: Report, unit: Path, enable: bool) -> None:
    target = f"{layout.unit_dir}/{UNIT_NAME}"
    changed = _write(layout, target, unit.read_bytes(), 0o644, report, note="systemd unit")
    systemd_running = layout.is_live and Path("/run/systemd/system").is_dir()
    if changed and systemd_running:
        _run(["systemctl", "daemon-reload"])
    if not enable:
        return
    link = layout.host(f"{layout.unit_dir}/multi-user.target.wants/{UNIT_NAME}")
    if link.is_symlink() and os.readlink(link) == target:
        report.add("unchanged", f"enabled {UNIT_NAME}", "multi-user.target")
        return
    # What `systemctl enable` does, without needing a running systemd (or this root's systemctl).
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)
    report.add("created", f"enabled {UNIT_NAME}", "multi-user.target")


# -- helpers -------------------------------------------------------------------------------

def _write(layout: Layout, target: str, data: bytes, mode: int, report: Report, *, group: str | None = None,
           note: str = "") -> bool:
    """Write a file atomically if its content or mode differs; True if anything changed."""
    path = layout.host(target)
    exists = path.is_file()
    if exists and path.read_bytes() == data:
        return _fix_mode(layout, target, mode, report, note, group=group)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _chown(layout, path, None, group=group)
    report.add("updated" if exists else "created", target, note)
    return True


def _fix_mode(layout: Layout, target: str, mode: int, report: Report, note: str, *, group: str | None = None) -> bool:
    path = layout.host(target)
    changed = path.stat().st_mode & 0o7777 != mode
    if changed:
        path.chmod(mode)
    changed |= _chown(layout, path, None, group=group)
    report.add("updated" if changed else "unchanged", target, note)
    return changed


def _chown(layout: Layout, path: Path, owner: str | None, *, group: str | None = None) -> bool:
    """Set owner/group on the live system only; under --root the names mean nothing yet."""
    if not layout.is_live:
        return False
    uid = pwd.getpwnam(owner).pw_uid if owner else 0
    gid = grp.getgrnam(group or owner).gr_gid if (group or owner) else 0
    info = path.stat()
    if (info.st_uid, info.st_gid) == (uid, gid):
        return False
    os.chown(path, uid, gid)
    return True


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _user_in_group(user: str, group: str) -> bool:
    try:
        return user in grp.getgrnam(group).gr_mem
    except KeyError:
        return False


def _run(command: list[str]) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)
    except subprocess.CalledProcessError as exc:
        raise ProvisionError(f"{' '.join(command)} failed: {(exc.stderr or exc.stdout).strip()}") from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProvisionError(f"{' '.join(command)} failed: {exc}") from None
