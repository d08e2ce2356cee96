"""Make a signed sync bundle from the shipped models and the simulator's product catalogue.

    .venv/bin/python models/make_bundle.py --keygen bundle-signing.pem     # once, for development
    .venv/bin/python models/make_bundle.py --key bundle-signing.pem --version 7 --out build/bundles \\
        [--model defects=models/inspection-detector/int8 ...] [--no-catalog] [--expires-days 30] \\
        [--golden-images NAME=DIR] [--publish]

writes OUT/7/ (the models, the product database, the golden images and the signed
manifest.json) in the layout the device and hw_sim.cloud expect; with --publish also
OUT/manifest.json, the manifest a server hands out as the current one. Give the device
bundle-signing.pem.pub (`edge-agent provision --bundle-key`).

Golden images are rendered by the simulator for the models it knows (inspection and
checkout; classifiers get crops of the objects), or taken from --golden-images DIR. The
expected results come from running each model through the agent's own engine, as the
device will.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from agent import catalog  # noqa: E402
from agent.control.auth import ControlSetupError, generate_keypair, load_private_key  # noqa: E402
from agent.infer.engine import Classifier, Detector, Model, ModelLoadError, _find_model_file  # noqa: E402
from agent.sync.files import sha256_file  # noqa: E402
from agent.sync.manifest import (  # noqa: E402
    Artefact, CatalogEntry, GoldenCase, GoldenDetection, Manifest, ModelEntry, iso_time, sign,
)

DEFAULT_MODELS = {"defects": REPO / "models" / "inspection-detector" / "int8"}
GOLDEN_THRESHOLD = 0.1
CURRENCY = "EUR"
_expected_cache: dict[str, list[GoldenCase]] = {}  # (model, images) digest -> cases: rebuilds reuse the runs


class BundleError(Exception):
    """A user error: printed as one line."""


def simulator_products() -> list[catalog.Product]:
    from hw_sim.products import CATALOG

    return [catalog.Product(sku=p.sku, name=p.name, price_cents=p.price_cents, currency=CURRENCY,
                            priced_by_weight=p.priced_by_weight, weight_g=p.weight_g, barcode=p.sku, label=p.sku)
            for p in CATALOG]


def render_golden(model: Model, count: int, seed: int = 2024) -> list[np.ndarray]:
    """Simulator images the model is meant for: frames for a detector, object crops for a classifier."""
    from hw_sim.products import CATALOG

    names = set(model.info.names.values())
    if names <= {"scratch", "dent", "stain"} or names <= {"minor", "major", "critical"}:
        from hw_sim.scene import PartRenderer

        renderer = PartRenderer(seed=seed, defect_rate=0.8)

        def scene():
            part = renderer.render()
            return part.image, [d.box for d in part.defects]
    elif names <= {"product"} or names <= {p.sku for p in CATALOG}:
        from hw_sim.checkout_scene import CheckoutRenderer

        renderer = CheckoutRenderer(seed=seed)

        def scene():
            rendered = renderer.render()
            return rendered.image, [item.box for item in rendered.items]
    else:
        raise BundleError(f"{model.file}: the simulator renders no golden images for classes {sorted(names)[:5]}; "
                          "give --golden-images NAME=DIR")
    images: list[np.ndarray] = []
    for _ in range(count * 20):
        image, boxes = scene()
        images.extend([_crop(image, box) for box in boxes] if model.info.adapter == "classifier" else [image])
        if len(images) >= count:
            break
    return images[:count]


def _crop(image: np.ndarray, box, margin: int = 6) -> np.ndarray:
    x1, y1, x2, y2 = box
    h, w = image.shape[:2]
    return image[max(0, y1 - margin):min(h, y2 + margin), max(0, x1 - margin):min(w, x2 + margin)].copy()


def folder_images(folder: Path, count: int) -> list[np.ndarray]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))[:count]
    images = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in files]
    if not images or any(i is None for i in images):
        raise BundleError(f"--golden-images {folder}: needs readable images (PNG, JPEG, BMP)")
    return images


def expected_results(model: Model, image_files: list[str], images: list[np.ndarray]) -> list[GoldenCase]:
    """What the agent's engine gives on each image: the expectation recorded in the manifest."""
    digest = hashlib.sha256(model.info.sha256().encode())
    for image in images:
        digest.update(image.tobytes())
    key = digest.hexdigest() + "|" + ",".join(image_files)
    if key not in _expected_cache:
        cases = []
        if model.info.adapter == "classifier":
            runner = Classifier(model)
            for name, image in zip(image_files, images):
                label, probability = runner.classify([image], k=1)[0][0]
                cases.append(GoldenCase(image=name, top=(label, round(probability, 5))))
        else:
            runner = Detector(model)
            for name, image in zip(image_files, images):
                found = runner.detect(image, GOLDEN_THRESHOLD)
                cases.append(GoldenCase(image=name, detections=[
                    GoldenDetection(label=d.label, score=round(d.score, 5), box=tuple(round(v, 2) for v in d.box))
                    for d in found]))
        _expected_cache[key] = cases
    return _expected_cache[key]


def build_bundle(out: Path, version: int, key, models: dict[str, Path] | None = None, *, with_catalog: bool = True,
                 products: list[catalog.Product] | None = None, expires_in_s: float = 30 * 86400,
                 created_at: float | None = None, label: str = "", golden_count: int = 6,
                 golden_images: dict[str, Path] | None = None, publish: bool = False) -> Path:
    """Write OUT/VERSION/ and return it. key: the Ed25519 private key that signs the manifest."""
    models = DEFAULT_MODELS if models is None else models
    bundle = Path(out) / str(version)
    if bundle.exists():
        shutil.rmtree(bundle)
    bundle.mkdir(parents=True)
    entries = {}
    for name, source in models.items():
        try:
            xml = _find_model_file(Path(source))
        except ModelLoadError as exc:
            raise BundleError(str(exc)) from None
        target = bundle / "models" / name
        target.mkdir(parents=True)
        for file in (xml, xml.with_suffix(".bin"), xml.parent / "metadata.yaml"):
            if file.is_file():
                shutil.copy2(file, target / file.name)
        model = Model(target, "CPU", "LATENCY")
        folder = (golden_images or {}).get(name)
        images = folder_images(folder, golden_count) if folder else render_golden(model, golden_count)
        files = []
        for i, image in enumerate(images):
            relative = f"golden/{name}/{i:03d}.png"
            (bundle / relative).parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(bundle / relative), image):
                raise BundleError(f"cannot write {bundle / relative}")
            files.append(relative)
        entries[name] = ModelEntry(dir=f"models/{name}", golden=expected_results(model, files, images),
                                   threshold=GOLDEN_THRESHOLD)
    catalog_entry = None
    if with_catalog:
        catalog.build(bundle / "catalog.db", products or simulator_products(), version=str(version))
        catalog_entry = CatalogEntry(path="catalog.db", version=str(version))
    artefacts = {}
    for file in sorted(p for p in bundle.rglob("*") if p.is_file()):
        relative = file.relative_to(bundle).as_posix()
        artefacts[relative] = Artefact(sha256=sha256_file(file), size=file.stat().st_size, url=f"{version}/{relative}")
    created = time.time() if created_at is None else created_at
    manifest = Manifest(version=version, label=label or f"bundle {version}", created_at=iso_time(created),
                        expires_at=iso_time(created + expires_in_s), artefacts=artefacts, models=entries,
                        catalog=catalog_entry)
    envelope = sign(manifest, [key])
    (bundle / "manifest.json").write_bytes(envelope)
    if publish:
        (Path(out) / "manifest.json").write_bytes(envelope)
    return bundle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keygen", type=Path, metavar="PEM", help="make a signing key pair (PEM and PEM.pub) and exit")
    parser.add_argument("--key", type=Path, help="the Ed25519 private key (PEM) that signs the manifest")
    parser.add_argument("--version", type=int, help="the bundle version: an integer, higher than every earlier one")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bundles", help="default build/bundles")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=DIR",
                        help="a config model name and its IR folder (repeatable; default defects=inspection-detector/int8)")
    parser.add_argument("--no-catalog", action="store_true", help="no product database in this bundle")
    parser.add_argument("--expires-days", type=float, default=30.0)
    parser.add_argument("--label", default="")
    parser.add_argument("--golden-count", type=int, default=6, help="golden images per model (default 6)")
    parser.add_argument("--golden-images", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--publish", action="store_true", help="also write OUT/manifest.json (the current bundle)")
    args = parser.parse_args(argv)
    try:
        if args.keygen:
            private, public = generate_keypair(args.keygen)
            print(f"wrote {private} (keep it off the devices) and {public} (for edge-agent provision --bundle-key)")
            return 0
        if args.key is None or args.version is None:
            raise BundleError("give --key PEM and --version N (or --keygen PEM to make a key)")
        if args.version < 1:
            raise BundleError("--version must be a positive integer")
        models = dict(_pair(item, "--model") for item in args.model) or None
        golden = dict(_pair(item, "--golden-images") for item in args.golden_images)
        bundle = build_bundle(args.out, args.version, load_private_key(args.key), models,
                              with_catalog=not args.no_catalog, expires_in_s=args.expires_days * 86400,
                              label=args.label, golden_count=args.golden_count, golden_images=golden,
                              publish=args.publish)
    except (BundleError, ControlSetupError, ModelLoadError, catalog.CatalogError) as exc:
        print(exc, file=sys.stderr)
        return 2
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    print(f"wrote {bundle} ({size / 1e6:.1f} MB){' and published it' if args.publish else ''}")
    return 0


def _pair(item: str, flag: str) -> tuple[str, Path]:
    name, sep, value = item.partition("=")
    if not sep or not name or not value:
        raise BundleError(f"{flag} {item!r}: expected NAME=PATH")
    return name, Path(value)


if __name__ == "__main__":
    sys.exit(main())
