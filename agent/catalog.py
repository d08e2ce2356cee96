"""The product database: one SQLite file per bundle, read-only on the device.

    meta      key/value: schema_version (SCHEMA_VERSION), version (the bundle's), created_at
    products  sku (primary key), name, price_cents, currency, priced_by_weight, weight_g,
              barcode, label (the classifier's class label, unique)

`build()` writes a database (the bundle builder and `edge-agent catalog build` use it; `read_csv()`
reads the products from a CSV file with the columns above); `check()` is what the sync job runs
on a staged file before it may be activated: PRAGMA integrity_check, the tables, columns and
schema version above, at least one product, and sane values. `Catalog` is the read-only
lookup by classifier label, sku or barcode. The only module that imports sqlite-utils.
"""

from __future__ import annotations

import csv
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import sqlite_utils

SCHEMA_VERSION = 1
PRODUCT_COLUMNS = {  # name -> declared type
    "sku": "TEXT", "name": "TEXT", "price_cents": "INTEGER", "currency": "TEXT",
    "priced_by_weight": "INTEGER", "weight_g": "FLOAT", "barcode": "TEXT", "label": "TEXT",
}
META_COLUMNS = {"key": "TEXT", "value": "TEXT"}
_PYTHON_TYPES = {"TEXT": str, "INTEGER": int, "FLOAT": float}


class CatalogError(Exception):
    """The file is not a usable product database; the message names it and what is wrong."""


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    price_cents: int  # per kg when priced_by_weight, else per item
    currency: str  # ISO 4217
    priced_by_weight: bool
    weight_g: float | None
    barcode: str | None
    label: str  # the classifier's label for this product


@dataclass(frozen=True)
class CatalogInfo:
    path: Path
    version: str
    schema_version: int
    products: int


def build(path: Path, products: Iterable[Product], version: str) -> CatalogInfo:
    """Write a new database at path (replacing it), flushed to disk, and check it."""
    path = Path(path)
    path.unlink(missing_ok=True)
    db = sqlite_utils.Database(path)
    try:
        db["meta"].create(_python_types(META_COLUMNS), pk="key", not_null={"value"})
        db["meta"].insert_all([{"key": "schema_version", "value": str(SCHEMA_VERSION)},
                               {"key": "version", "value": str(version)},
                               {"key": "created_at", "value": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}])
        db["products"].create(_python_types(PRODUCT_COLUMNS), pk="sku",
                              not_null={"name", "price_cents", "currency", "priced_by_weight", "label"})
        db["products"].create_index(["label"], unique=True)
        db["products"].create_index(["barcode"])
        db["products"].insert_all({**asdict(p), "priced_by_weight": int(p.priced_by_weight)} for p in products)
        db.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        db.conn.commit()
        db.vacuum()
    finally:
        db.close()
    with open(path, "rb") as f:
        os.fsync(f.fileno())
    return check(path)


def read_csv(path: Path) -> list[Product]:
    """Products from a CSV file with a header row naming the products columns (barcode and
    weight_g may be empty; priced_by_weight is 1/0, true/false or yes/no). Raises CatalogError."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CatalogError(f"{path}: cannot read it as CSV: {exc}") from None
    if not rows:
        raise CatalogError(f"{path}: no products (a header row and one row per product)")
    missing = [c for c in PRODUCT_COLUMNS if c not in rows[0]]
    if missing:
        raise CatalogError(f"{path}: missing column(s) {', '.join(missing)}; the header needs "
                           f"{','.join(PRODUCT_COLUMNS)}")
    products = []
    for number, row in enumerate(rows, start=2):
        column = "?"
        try:
            column = "price_cents"
            price = int(row["price_cents"])
            column = "priced_by_weight"
            by_weight = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}[
                row["priced_by_weight"].strip().lower()]
            column = "weight_g"
            weight = float(row["weight_g"]) if row["weight_g"].strip() else None
        except (ValueError, KeyError, AttributeError):
            raise CatalogError(f"{path}:{number} {column}: {row.get(column)!r} is not a valid value") from None
        products.append(Product(sku=row["sku"].strip(), name=row["name"].strip(), price_cents=price,
                                currency=row["currency"].strip().upper(), priced_by_weight=by_weight, weight_g=weight,
                                barcode=row["barcode"].strip() or None, label=row["label"].strip()))
    return products


def _python_types(columns: dict[str, str]) -> dict[str, type]:
    return {name: _PYTHON_TYPES[kind] for name, kind in columns.items()}


def _connect_read_only(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise CatalogError(f"product database {path}: no such file")
    try:
        return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
    except sqlite3.Error as exc:
        raise CatalogError(f"product database {path}: cannot open: {exc}") from None


def check(path: Path) -> CatalogInfo:
    """Everything a database must pass before it is activated. Raises CatalogError."""
    path = Path(path)
    db = _connect_read_only(path)
    try:
        return _check(db, path)
    except sqlite3.DatabaseError as exc:  # "file is not a database", a torn page, ...
        raise CatalogError(f"product database {path}: {exc}") from None
    finally:
        db.close()


def _check(db: sqlite3.Connection, path: Path) -> CatalogInfo:
    where = f"product database {path}"
    problems = [row[0] for row in db.execute("PRAGMA integrity_check")]
    if problems != ["ok"]:
        raise CatalogError(f"{where}: integrity_check failed: {'; '.join(problems[:3])}")
    for table, expected in (("meta", META_COLUMNS), ("products", PRODUCT_COLUMNS)):
        columns = {row[1]: row[2].upper() for row in db.execute(f"PRAGMA table_info({table})")}
        if not columns:
            raise CatalogError(f"{where}: table {table} is missing")
        wrong = {name: kind for name, kind in expected.items() if columns.get(name) != kind}
        if wrong:
            found = ", ".join(f"{n} {columns.get(n, 'missing')}" for n in wrong)
            raise CatalogError(f"{where}: table {table} has the wrong columns ({found})")
    meta = dict(db.execute("SELECT key, value FROM meta"))
    if meta.get("schema_version") != str(SCHEMA_VERSION):
        raise CatalogError(f"{where}: schema_version {meta.get('schema_version')!r}, this agent reads "
                           f"{SCHEMA_VERSION}")
    if not meta.get("version"):
        raise CatalogError(f"{where}: meta has no version")
    count = db.execute("SELECT COUNT(*) FROM products").fetchone()[0]
    if count == 0:
        raise CatalogError(f"{where}: no products")
    bad = db.execute(
        "SELECT sku FROM products WHERE name IS NULL OR name = '' OR label IS NULL OR label = '' "
        "OR price_cents IS NULL OR price_cents < 0 OR typeof(price_cents) != 'integer' "
        "OR currency IS NULL OR length(currency) != 3 OR priced_by_weight NOT IN (0, 1) LIMIT 3").fetchall()
    if bad:
        raise CatalogError(f"{where}: products with missing or invalid fields: {', '.join(r[0] for r in bad)}")
    labels = db.execute("SELECT COUNT(DISTINCT label) FROM products").fetchone()[0]
    if labels != count:
        raise CatalogError(f"{where}: classifier labels are not unique")
    return CatalogInfo(path, meta["version"], SCHEMA_VERSION, count)


class Catalog:
    """Read-only lookups in one checked database. Safe to use from several threads."""

    def __init__(self, path: Path):
        self.info = check(path)
        self.path = Path(path)
        self._db = _connect_read_only(self.path)
        self._lock = threading.Lock()

    def _one(self, column: str, value: str) -> Product | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT sku, name, price_cents, currency, priced_by_weight, weight_g, barcode, label "
                f"FROM products WHERE {column} = ?", (value,)).fetchone()
        if row is None:
            return None
        return Product(row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6], row[7])

    def by_label(self, label: str) -> Product | None:
        return self._one("label", label)

    def by_sku(self, sku: str) -> Product | None:
        return self._one("sku", sku)

    def by_barcode(self, barcode: str) -> Product | None:
        return self._one("barcode", barcode)

    def close(self) -> None:
        with self._lock:
            self._db.close()
