#!/usr/bin/env python3
"""Build the offline install bundle: everything a device with no internet needs, for a USB stick.

    edge-agent-bundle-VERSION-pyXY-ARCH/
      install.sh          checks SHA256SUMS, makes the venv, pip install --no-index, copies the
                          models, then runs `edge-agent provision` (see install.sh --help)
      bundle.env          version, target Python and architecture
      wheels/             edge-agent and every dependency, as wheels for the target
      models/             the model folders (IRs, metadata, cards)
      systemd/            the unit
      provisioning/       the fleet template, an example of device values, cloud-init user-data
      SHA256SUMS

The wheelhouse is for the target's Python and CPU, not necessarily this machine's:
`--python-version 3.10 --arch aarch64` builds one for a Jetson on Ubuntu 22.04. Only binary
wheels are taken (nothing is compiled on the device); `--glibc` is the oldest C library the
target may have (manylinux tags up to it are accepted).

Usage (from a checkout, with network access to a package index):
    python3 provisioning/build_bundle.py [--out dist] [--python-version 3.11] [--arch x86_64]
                                         [--models models/inspection-detector ...] [--tar]
`--wheels project` puts only edge-agent's own wheel in (a quick layout check); `--wheels none`
none at all.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARCHES = ("x86_64", "aarch64")
PROVISIONING_FILES = ("fleet.template.yaml", "device.example.yaml", "cloud-init.user-data.yaml")


class BundleError(Exception):
    pass


def project_version() -> str:
    found = re.search(r'^version\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text(), re.MULTILINE)
    if not found:
        raise BundleError("pyproject.toml has no version")
    return found.group(1)


def default_models() -> list[Path]:
    """Every folder under models/ that holds an OpenVINO IR (an .xml beside a .bin), one level down."""
    found = []
    for folder in sorted((REPO / "models").iterdir()) if (REPO / "models").is_dir() else []:
        if folder.is_dir() and any(xml.with_suffix(".bin").is_file() for xml in folder.rglob("*.xml")):
            found.append(folder)
    return found


def platform_tags(arch: str, glibc: str) -> list[str]:
    major, minor = (int(part) for part in glibc.split("."))
    if major != 2 or minor < 17:
        raise BundleError(f"--glibc {glibc}: expected 2.17 or newer")
    return [f"manylinux_2_{m}_{arch}" for m in range(minor, 16, -1)] + [f"manylinux2014_{arch}", f"linux_{arch}"]


def build(out: Path, *, python_version: str, arch: str, glibc: str, models: list[Path], wheels: str,
          pip: list[str]) -> Path:
    version = project_version()
    bundle = out / f"edge-agent-bundle-{version}-py{python_version.replace('.', '')}-{arch}"
    if bundle.exists():
        shutil.rmtree(bundle)
    (bundle / "wheels").mkdir(parents=True)

    if wheels != "none":
        _build_project_wheel(bundle / "wheels", pip)
    if wheels == "all":
        project_wheel = next((bundle / "wheels").glob("edge_agent-*.whl"))
        _download_dependencies(project_wheel, bundle / "wheels", python_version, arch, glibc, pip)

    for folder in models:
        if not folder.is_dir():
            raise BundleError(f"model folder not found: {folder}")
        shutil.copytree(folder, bundle / "models" / folder.name, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    (bundle / "models").mkdir(exist_ok=True)

    (bundle / "systemd").mkdir()
    shutil.copy2(REPO / "systemd" / "edge-agent.service", bundle / "systemd")
    (bundle / "provisioning").mkdir()
    for name in PROVISIONING_FILES:
        shutil.copy2(REPO / "provisioning" / name, bundle / "provisioning")
    shutil.copy2(REPO / "provisioning" / "install.sh", bundle / "install.sh")
    (bundle / "install.sh").chmod(0o755)
    (bundle / "bundle.env").write_text(
        f"EDGE_AGENT_VERSION={version}\nPYTHON_VERSION={python_version}\nARCH={arch}\nGLIBC={glibc}\n")
    _write_checksums(bundle)
    return bundle


def _build_project_wheel(wheels: Path, pip: list[str]) -> None:
    # Built from a copy of the sources, so the checkout gets no build/ or egg-info litter. The build
    # backend comes from this environment when it has one, so no index is needed for it.
    flags = ["--no-build-isolation"] if _has_build_backend(pip) else []
    with tempfile.TemporaryDirectory(prefix="edge-agent-src-") as tmp:
        source = Path(tmp) / "edge-agent"
        source.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(REPO / name, source)
        for package in ("agent", "hw_sim"):
            shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
        _run([*pip, "wheel", "--quiet", "--no-deps", *flags, "--wheel-dir", str(wheels), str(source)])


def _has_build_backend(pip: list[str]) -> bool:
    python = pip[0]
    return subprocess.run([python, "-c", "import setuptools, wheel"], capture_output=True).returncode == 0


def _download_dependencies(project_wheel: Path, wheels: Path, python_version: str, arch: str, glibc: str,
                           pip: list[str]) -> None:
    major_minor = python_version.replace(".", "")
    command = [*pip, "download", "--quiet", "--only-binary=:all:", "--dest", str(wheels),
               "--python-version", python_version, "--implementation", "cp",
               "--abi", f"cp{major_minor}", "--abi", "abi3", "--abi", "none"]
    for tag in platform_tags(arch, glibc):
        command += ["--platform", tag]
    _run([*command, str(project_wheel)])


def _write_checksums(bundle: Path) -> None:
    lines = []
    for path in sorted(p for p in bundle.rglob("*") if p.is_file() and p.name != "SHA256SUMS"):
        digest = hashlib.sha256()
        with path.open("rb") as data:
            for block in iter(lambda: data.read(1 << 20), b""):
                digest.update(block)
        lines.append(f"{digest.hexdigest()}  {path.relative_to(bundle).as_posix()}")
    (bundle / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def _run(command: list[str]) -> None:
    print("+", " ".join(command), flush=True)
    try:
        subprocess.run(command, check=True)
    except subprocess.CalledProcessError as exc:
        raise BundleError(f"{' '.join(command[:4])} ... failed with status {exc.returncode} (see above)") from None


def main(argv: list[str] | None = None) -> int:
    machine = platform.machine().replace("arm64", "aarch64").replace("AMD64", "x86_64")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="where the bundle folder goes (default dist/)")
    parser.add_argument("--python-version", default=f"{sys.version_info.major}.{sys.version_info.minor}",
                        help="the target's Python, e.g. 3.11 (default: this one)")
    parser.add_argument("--arch", choices=ARCHES, default=machine if machine in ARCHES else "x86_64",
                        help="the target's CPU (default: this one)")
    parser.add_argument("--glibc", default="2.31", help="the oldest glibc among the targets (default 2.31: Debian 11, "
                                                        "Ubuntu 20.04)")
    parser.add_argument("--models", type=Path, action="append",
                        help="a model folder to ship (repeatable; default: each folder under models/ with an IR)")
    parser.add_argument("--wheels", choices=["all", "project", "none"], default="all",
                        help="all (default): edge-agent and its dependencies; project: only edge-agent's wheel")
    parser.add_argument("--pip", default=f"{sys.executable} -m pip", help="the pip command to use (default: this Python's)")
    parser.add_argument("--tar", action="store_true", help="also write BUNDLE.tar.gz beside the folder")
    args = parser.parse_args(argv)
    models = args.models if args.models is not None else default_models()
    try:
        if not models:
            raise BundleError("no models to ship: models/ has no IR folder yet; build one or pass --models DIR")
        bundle = build(args.out, python_version=args.python_version, arch=args.arch, glibc=args.glibc, models=models,
                       wheels=args.wheels, pip=args.pip.split())
    except BundleError as exc:
        print(f"build_bundle: {exc}", file=sys.stderr)
        return 2
    if args.tar:
        archive = bundle.with_name(bundle.name + ".tar.gz")
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(bundle, arcname=bundle.name)
        print(f"wrote {archive}")
    print(f"wrote {bundle} ({sum(p.stat().st_size for p in bundle.rglob('*') if p.is_file()) / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
