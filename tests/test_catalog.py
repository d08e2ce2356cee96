"""The product database: built from the simulator's catalogue, checked, looked up; damage refused."""

from __future__ import annotations

import sqlite3

import pytest

from agent import catalog
from models.make_bundle import simulator_products


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "catalog.db"
    info = catalog.build(path, simulator_products(), version="7")
    assert info.products == 30 and info.version == "7" and info.schema_version == catalog.SCHEMA_VERSION
    return path


def test_lookup_by_classifier_label_sku_and_barcode(db):
    products = catalog.Catalog(db)
    try:
        banana = products.by_label("4011")
        assert banana.name == "Banana" and banana.priced_by_weight and banana.price_cents == 199
        assert banana.currency == "EUR"
        cola = products.by_sku("5000112637922")
        assert cola.name == "Cola 330 ml can" and not cola.priced_by_weight
        assert products.by_barcode(cola.barcode) == cola
        assert products.by_label("no-such-label") is None
        with pytest.raises(sqlite3.OperationalError):  # read-only on the device
            products._db.execute("DELETE FROM products")
    finally:
        products.close()


def test_check_refuses_a_damaged_file(db):
    data = bytearray(db.read_bytes())
    for page in range(4096, len(data), 4096):  # every b-tree page header after the schema page
        data[page: page + 16] = b"\xff" * 16
    broken = db.with_name("broken.db")
    broken.write_bytes(bytes(data))
    with pytest.raises(catalog.CatalogError, match="broken.db"):
        catalog.check(broken)
    truncated = db.with_name("truncated.db")
    truncated.write_bytes(db.read_bytes()[:4096])
    with pytest.raises(catalog.CatalogError):
        catalog.check(truncated)
    not_sqlite = db.with_name("text.db")
    not_sqlite.write_text("hello")
    with pytest.raises(catalog.CatalogError, match="not a database"):
        catalog.check(not_sqlite)
    with pytest.raises(catalog.CatalogError, match="no such file"):
        catalog.check(db.with_name("missing.db"))


@pytest.mark.parametrize("sql, message", [
    ("UPDATE meta SET value = '99' WHERE key = 'schema_version'", "schema_version '99'"),
    ("DELETE FROM products", "no products"),
    ("UPDATE products SET price_cents = -1 WHERE sku = '4011'", "invalid fields: 4011"),
    ("UPDATE products SET currency = 'EURO' WHERE sku = '4011'", "invalid fields: 4011"),
    ("ALTER TABLE products DROP COLUMN weight_g", "wrong columns (weight_g missing)"),
    ("DROP TABLE meta", "table meta is missing"),
])
def test_check_refuses_a_wrong_schema_or_bad_rows(db, sql, message):
    with sqlite3.connect(db) as conn:
        if "DROP COLUMN" in sql:
            conn.execute("DROP INDEX IF EXISTS idx_products_barcode")
        conn.execute(sql)
    with pytest.raises(catalog.CatalogError, match=message.replace("(", r"\(").replace(")", r"\)")):
        catalog.check(db)


def test_duplicate_labels_are_refused_at_build(tmp_path):
    products = simulator_products()
    products[1] = catalog.Product(**{**products[1].__dict__, "label": products[0].label})
    with pytest.raises(sqlite3.IntegrityError):
        catalog.build(tmp_path / "dup.db", products, version="1")
