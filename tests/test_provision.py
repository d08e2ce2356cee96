"""`edge-agent provision` into a temporary root (never the real system), and `edge-agent doctor`
against the simulator, including a mosquitto that requires TLS client certificates."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import pwd
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from agent.provision import CA_CREDENTIAL, CERT_CREDENTIAL, KEY_CREDENTIAL
from hw_sim.broker import find_mosquitto
from hw_sim.camera import SimCamera, encode_jpeg
from hw_sim.plc import SimPlc
from hw_sim.pos import SimPos
from hw_sim.scale import SimScale
from tiny_ir import save_tiny_detector

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "provisioning" / "fleet.template.yaml"


def _edge_agent(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def _provision(root: Path, *extra: str, broker: str = "mqtt://127.0.0.1:1883", plc: str = "192.168.10.20:502",
               camera: str = "http://192.168.10.30/snapshot.jpg") -> subprocess.CompletedProcess:
    return _edge_agent("provision", "--root", str(root), "--template", str(TEMPLATE), "--device-id", "line1-box7",
                       "--site", "plant-a", "--broker-url", broker, "--plc", plc, "--camera", f"cam0={camera}", *extra)


def _tree(root: Path) -> dict[str, tuple]:
    """Every path under root: mode, and content (or link target), and mtime."""
    tree = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        content = os.readlink(path) if path.is_symlink() else (path.read_bytes() if path.is_file() else None)
        tree[str(path.relative_to(root))] = (oct(info.st_mode), content, info.st_mtime_ns)
    return tree


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def _credentials(root: Path) -> dict[str, str]:
    return {"CREDENTIALS_DIRECTORY": str(root / "etc" / "credstore")}


# -- the tree --------------------------------------------------------------------------

def test_provision_into_a_root_creates_files_with_modes(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    result = _provision(root)
    assert result.returncode == 0, result.stderr

    modes = {
        "etc/edge-agent": 0o755, "etc/edge-agent/config.yaml": 0o640, "etc/edge-agent/mqtt-client.csr": 0o644,
        "etc/credstore": 0o700, f"etc/credstore/{KEY_CREDENTIAL}": 0o600,
        "var/lib/edge-agent": 0o750, "var/cache/edge-agent": 0o750, "var/log/edge-agent": 0o750,
        "etc/systemd/system/edge-agent.service": 0o644, "etc/sysusers.d/edge-agent.conf": 0o644,
    }
    assert {path: _mode(root / path) for path in modes} == modes
    assert (root / "etc/systemd/system/edge-agent.service").read_text() == (REPO / "systemd/edge-agent.service").read_text()
    link = root / "etc/systemd/system/multi-user.target.wants/edge-agent.service"
    assert os.readlink(link) == "/etc/systemd/system/edge-agent.service"
    sysusers = (root / "etc/sysusers.d/edge-agent.conf").read_text()
    assert 'u edge-agent - "Edge vision agent" /var/lib/edge-agent /usr/sbin/nologin' in sysusers
    assert all(f"m edge-agent {group}" in sysusers for group in ("video", "gpio", "dialout"))

    key = serialization.load_pem_private_key((root / f"etc/credstore/{KEY_CREDENTIAL}").read_bytes(), None)
    csr = x509.load_pem_x509_csr((root / "etc/edge-agent/mqtt-client.csr").read_bytes())
    assert isinstance(key, ec.EllipticCurvePrivateKey) and csr.is_signature_valid
    assert csr.public_key().public_numbers() == key.public_key().public_numbers()
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "line1-box7"

    config = yaml.safe_load((root / "etc/edge-agent/config.yaml").read_text())
    assert config["device"] == {"id": "line1-box7", "site": "plant-a"}
    assert config["mqtt"]["port"] == 1883 and config["mqtt"]["tls"] is None
    assert config["plc"]["host"] == "192.168.10.20" and config["plc"]["port"] == 502
    assert config["models"]["defects"]["path"] == "/opt/edge-agent/models/inspection-detector/int8"
    assert config["model_cache_dir"] == "/var/cache/edge-agent/openvino"
    check = _edge_agent("check-config", str(root / "etc/edge-agent/config.yaml"))
    assert check.returncode == 0, check.stderr
    assert "OK (device line1-box7; lines: inspect)" in check.stdout


def test_provision_twice_changes_nothing(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    assert _provision(root).returncode == 0
    before = _tree(root)
    second = _provision(root)
    assert second.returncode == 0, second.stderr
    assert "0 change(s)" in second.stdout
    assert _tree(root) == before


def test_provision_repairs_a_loosened_key_mode(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    assert _provision(root).returncode == 0
    key = root / f"etc/credstore/{KEY_CREDENTIAL}"
    key_bytes = key.read_bytes()
    key.chmod(0o644)
    again = _provision(root)
    assert ["updated", f"/etc/credstore/{KEY_CREDENTIAL}"] in [line.split()[:2] for line in again.stdout.splitlines()]
    assert _mode(key) == 0o600 and key.read_bytes() == key_bytes  # the identity is never replaced


@pytest.mark.parametrize(("extra", "message"), [
    (["--camera", "cam9=http://x/y.jpg"], "has no camera cam9"),
    (["--broker-url", "https://broker"], "expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"),
    (["--broker-url", "mqtts://broker.example.com"], "TLS needs the CA that signed the broker's certificate: pass --ca"),
])
def test_provision_user_errors_are_one_line(tmp_path, extra, message):
    root = tmp_path / "root"
    root.mkdir()
    result = _provision(root, *extra)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (root / "etc/edge-agent/config.yaml").exists()


def test_provision_ed25519_identity_from_a_values_file(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    values = tmp_path / "device.yaml"
    values.write_text((REPO / "provisioning" / "device.example.yaml").read_text().replace("mqtts://", "mqtt://"))
    result = _edge_agent("provision", "--root", str(root), "--template", str(TEMPLATE), "--values", str(values),
                         "--key-type", "ed25519")
    assert result.returncode == 0, result.stderr
    key = serialization.load_pem_private_key((root / f"etc/credstore/{KEY_CREDENTIAL}").read_bytes(), None)
    csr = x509.load_pem_x509_csr((root / "etc/edge-agent/mqtt-client.csr").read_bytes())
    assert isinstance(key, ed25519.Ed25519PrivateKey) and csr.is_signature_valid
    assert yaml.safe_load((root / "etc/edge-agent/config.yaml").read_text())["device"]["id"] == "line1-box1"


def test_provision_refuses_a_certificate_for_another_key(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    ca = _Ca(tmp_path / "ca")
    stranger = ec.generate_private_key(ec.SECP256R1())
    cert = ca.issue(stranger.public_key(), "line1-box7", tmp_path / "client.pem")
    result = _provision(root, "--cert", str(cert), "--ca", str(ca.cert_path))
    assert result.returncode == 2
    assert "the certificate is for another key, not this device's" in result.stderr


# -- TLS: CSR -> signed certificate -> doctor's handshake ------------------------------------

class _Ca:
    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test fleet CA")])
        now = dt.datetime.now(dt.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
                     .sign(self.key, hashes.SHA256()))
        self.cert_path = folder / "ca.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, public_key, common_name: str, path: Path, server: bool = False) -> Path:
        now = dt.datetime.now(dt.timezone.utc)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                   .issuer_name(self.cert.subject).public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=7))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                                  critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        path.write_bytes(builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _tls_mosquitto(folder: Path, ca: _Ca):
    """A mosquitto whose only listener is TLS and requires a client certificate from `ca`."""
    folder.mkdir(parents=True, exist_ok=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    (folder / "server.key").write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    ca.issue(server_key.public_key(), "localhost", folder / "server.pem", server=True)
    port = _free_port()
    (folder / "mosquitto.conf").write_text(
        f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"  # as root it would switch to a user that cannot read tmp files
        f"listener {port} 127.0.0.1\n"
        f"cafile {ca.cert_path}\ncertfile {folder / 'server.pem'}\nkeyfile {folder / 'server.key'}\n"
        "require_certificate true\nallow_anonymous true\npersistence false\nlog_dest stderr\n")
    log = open(folder / "mosquitto.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(find_mosquitto()), "-c", str(folder / "mosquitto.conf")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 5
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            assert proc.poll() is None and time.monotonic() < deadline, (folder / "mosquitto.log").read_text()
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        log.close()


def _part_jpeg() -> bytes:
    import numpy as np

    return encode_jpeg(np.full((120, 160, 3), 120, np.uint8))


def test_tls_identity_end_to_end_with_doctor(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    ca = _Ca(tmp_path / "ca")
    models = tmp_path / "models"
    save_tiny_detector(models / "inspection-detector" / "int8")
    with SimPlc() as plc, SimCamera() as camera, _tls_mosquitto(tmp_path / "broker", ca) as port:
        camera.show(_part_jpeg())

        def provision(*extra):
            result = _provision(root, "--ca", str(ca.cert_path), "--models-dir", str(models), *extra,
                                broker=f"mqtts://127.0.0.1:{port}", plc=f"127.0.0.1:{plc.port}", camera=camera.url)
            assert result.returncode == 0, result.stderr
            return result

        def doctor():  # this machine has no GPIO: the provisioned config's default pin factory is gpiozero's mock
            return _edge_agent("doctor", "--config", str(root / "etc/edge-agent/config.yaml"),
                               "--state-dir", str(tmp_path), "--min-free-mb", "1",
                               env={**_credentials(root), "GPIOZERO_PIN_FACTORY": "mock"})

        # First boot: the CSR exists, no certificate yet; the broker refuses a client without one.
        provision()
        config = yaml.safe_load((root / "etc/edge-agent/config.yaml").read_text())
        assert config["mqtt"]["tls"] == {"ca": f"credential:{CA_CREDENTIAL}"}
        before = doctor()
        assert before.returncode == 1
        assert "broker" in before.stdout and "FAIL" in before.stdout

        # The fleet CA signs the CSR; provisioning again installs the certificate.
        csr = x509.load_pem_x509_csr((root / "etc/edge-agent/mqtt-client.csr").read_bytes())
        signed = ca.issue(csr.public_key(), "line1-box7", tmp_path / "client.pem")
        provision("--cert", str(signed))
        assert _mode(root / f"etc/credstore/{CERT_CREDENTIAL}") == 0o644
        assert _mode(root / f"etc/credstore/{CA_CREDENTIAL}") == 0o644
        config = yaml.safe_load((root / "etc/edge-agent/config.yaml").read_text())
        assert config["mqtt"]["tls"] == {"ca": f"credential:{CA_CREDENTIAL}", "cert": f"credential:{CERT_CREDENTIAL}",
                                         "key": f"credential:{KEY_CREDENTIAL}"}
        check = _edge_agent("check-config", str(root / "etc/edge-agent/config.yaml"), env=_credentials(root))
        assert check.returncode == 0, check.stderr
        after = doctor()
    assert after.returncode == 0, after.stdout + after.stderr
    rows = {line.split()[0] + (" " + line.split()[1] if line.split()[0] in ("model", "camera", "disk") else ""): line
            for line in after.stdout.splitlines()[2:-1]}
    assert "handshake" in rows["broker"] and "client certificate; MQTT CONNECT accepted" in rows["broker"]
    assert "pass" in rows["plc"] and "pass" in rows["camera cam0"] and "160x120" in rows["camera cam0"]
    assert "pass" in rows["model defects"] and "pass" in rows["clock"] and "pass" in rows["config"]
    assert "pass" in rows["gpio"] and "MockFactory" in rows["gpio"]


# -- doctor on its own -----------------------------------------------------------------------

def test_doctor_fails_with_a_table_when_the_plc_broker_and_a_webhook_are_down(tmp_path):
    models = tmp_path / "models"
    save_tiny_detector(models / "tiny")
    with SimCamera() as camera, SimPos() as pos:
        camera.show(_part_jpeg())
        down = f"http://127.0.0.1:{_free_port()}/events"
        config = {
            "device": {"id": "box-1"}, "mqtt": {"host": "127.0.0.1", "port": _free_port()},
            "plc": {"host": "127.0.0.1", "port": _free_port()},
            "models": {"defects": {"path": str(models / "tiny")}},
            "cameras": {"cam0": {"type": "http_snapshot", "url": camera.url}},
            "lines": {"inspect": {"camera": "cam0", "model": "defects", "trigger": {"type": "interval", "period_ms": 1000},
                                  "webhooks": [{"name": "pos", "url": pos.url, "headers": {"X-Store": "12"}},
                                               {"name": "erp", "url": down}]}},
        }
        path = tmp_path / "agent.yaml"
        path.write_text(yaml.safe_dump(config))
        result = _edge_agent("doctor", "--config", str(path), "--state-dir", str(tmp_path), "--timeout", "0.5")
        assert pos.requests() == [], "the doctor sent the POS an event"  # SimPos records POSTs only
    assert result.returncode == 1
    lines = {" ".join(line.split()[:2]) if line.split()[0] == "webhook" else line.split()[0]: line
             for line in result.stdout.splitlines()[2:-1]}
    assert " FAIL " in lines["plc"] and "check the PLC is on" in lines["plc"]
    assert " FAIL " in lines["broker"] and "no TCP connection" in lines["broker"]
    assert " pass " in lines["camera"] and " pass " in lines["model"] and " pass " in lines["config"]
    assert " pass " in lines["webhook inspect/pos"] and "answers (HTTP 501 to HEAD)" in lines["webhook inspect/pos"]
    assert " FAIL " in lines["webhook inspect/erp"] and f"cannot reach {down}" in lines["webhook inspect/erp"]
    assert result.stdout.splitlines()[-1].endswith("passed, 3 failed, 0 skipped")


def test_doctor_reads_each_scale_and_names_what_is_wrong(tmp_path):
    models = tmp_path / "models"
    save_tiny_detector(models / "tiny")
    with SimCamera() as camera, SimScale(tmp_path / "scale", protocol="mtsics") as scale, \
            SimScale(tmp_path / "toledo", protocol="toledo") as toledo:
        camera.show(_part_jpeg())
        scale.place(412.5)

        def line(trigger: dict) -> dict:
            return {"camera": "cam0", "model": "defects", "trigger": trigger}

        config = {
            "device": {"id": "box-1"}, "mqtt": {"host": "127.0.0.1", "port": _free_port()},
            "models": {"defects": {"path": str(models / "tiny")}},
            "cameras": {"cam0": {"type": "http_snapshot", "url": camera.url}},
            "lines": {"weigh": line({"type": "scale", "port": str(scale.link), "protocol": "mtsics"}),
                      "unplugged": line({"type": "scale", "port": str(tmp_path / "ttyUSB9"), "protocol": "mtsics"}),
                      # a Toledo scale read as MT-SICS: bytes arrive, no reading does
                      "wrong": line({"type": "scale", "port": str(toledo.link), "protocol": "mtsics"})},
        }
        path = tmp_path / "agent.yaml"
        path.write_text(yaml.safe_dump(config))
        result = _edge_agent("doctor", "--config", str(path), "--state-dir", str(tmp_path), "--timeout", "1")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    rows = {" ".join(row.split()[:2]): row for row in result.stdout.splitlines()[2:-1]}
    assert " pass " in rows["scale weigh"] and "412.5 g (stable)" in rows["scale weigh"], rows["scale weigh"]
    assert " FAIL " in rows["scale unplugged"] and "ttyUSB9" in rows["scale unplugged"]
    assert " FAIL " in rows["scale wrong"] and "no reading within the timeout" in rows["scale wrong"]


@pytest.mark.parametrize("red", [6, "GPIO99"])
def test_doctor_claims_every_gpio_pin_without_driving_one(tmp_path, red):
    models = tmp_path / "models"
    save_tiny_detector(models / "tiny")
    with SimCamera() as camera:
        camera.show(_part_jpeg())
        config = {
            "device": {"id": "box-1"}, "mqtt": {"host": "127.0.0.1", "port": _free_port()},
            "gpio": {"pin_factory": "mock", "stack_light": {"green": 5, "red": red}},
            "models": {"defects": {"path": str(models / "tiny")}},
            "cameras": {"cam0": {"type": "http_snapshot", "url": camera.url}},
            "lines": {"inspect": {"camera": "cam0", "model": "defects", "trigger": {"type": "gpio", "pin": 17},
                                  "reject_output": {"pin": 27}}},
        }
        path = tmp_path / "agent.yaml"
        path.write_text(yaml.safe_dump(config))
        result = _edge_agent("doctor", "--config", str(path), "--state-dir", str(tmp_path), "--timeout", "0.5")
    row = next(line for line in result.stdout.splitlines() if line.split()[:1] == ["gpio"])
    if red == 6:
        assert " pass " in row and "MockFactory: 1 inputs and 3 outputs claimed" in row, row
        assert "inspect trigger 17" in row and "inspect reject_output 27" in row and "stack light red 6" in row
    else:
        assert " FAIL " in row and "stack light red (output GPIO99): GPIO99 is not a valid pin name" in row, row


def test_doctor_with_a_broken_config_skips_what_needs_it(tmp_path):
    path = tmp_path / "agent.yaml"
    path.write_text("device:\n  id: box-1\nmqtt: {}\n")
    result = _edge_agent("doctor", "--config", str(path), "--state-dir", str(tmp_path))
    assert result.returncode == 1
    assert "config" in result.stdout and "mqtt.host: required field is missing" in result.stdout
    assert result.stdout.count(" skip ") == 4
    assert "Traceback" not in result.stderr
