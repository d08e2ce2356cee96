"""The product catalogue of the simulated self-checkout.

Each product carries what the till needs (sku, name, price, weighing rule, nominal
weight) and what the scene renderer needs to draw it seen from above (shape, palette,
printed label, footprint). ``hw_sim.checkout_scene`` holds one painter per ``shape``;
the roles of the palette entries are fixed per shape and listed in ``SHAPES``.

Some products are deliberately alike, so a classifier has real work: red apple /
green apple / tomato / red pepper, cola / cherry cola, corn flakes / bran flakes,
salted / paprika crisps, water / orange juice / wine bottles. Each of those pairs
still differs in something visible on a ~96 px crop (colour band, calyx, stalk,
logo, cap colour, bag colour).

Colours are BGR, like every frame in the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Product:
    sku: str  # PLU (4 digits) for loose produce, EAN-13-like for packaged goods; unique
    name: str
    price_cents: int  # per kg when priced_by_weight, else per item
    priced_by_weight: bool
    weight_g: float  # nominal weight of one item
    shape: str  # painter key, see SHAPES
    colors: tuple[tuple[int, int, int], ...]  # BGR palette, roles per shape (SHAPES)
    label: str  # text printed on the pack; "" for produce
    size_mm: tuple[float, float]  # footprint (w, h) seen from above, in the product's own frame
    mark: str = ""  # painter detail: logo / content kind; "" for none


# Palette roles per shape: colors[i] is used as listed.
SHAPES: dict[str, tuple[str, ...]] = {
    "banana": ("peel", "peel shadow", "tips", "stem"),
    "apple": ("skin", "skin shadow", "streaks/blush", "stalk"),
    "citrus": ("peel", "peel shadow", "highlight", "navel"),
    "lemon": ("peel", "peel shadow", "highlight", "tips"),
    "tomato": ("skin", "skin shadow", "highlight", "calyx"),
    "cucumber": ("skin", "skin shadow", "stripes"),
    "broccoli": ("florets", "floret shadow", "stem"),
    "potato": ("skin", "skin shadow", "eyes"),
    "pepper": ("skin", "skin shadow", "stem"),
    "avocado": ("skin", "skin shadow", "pebbles"),
    "can": ("body", "band", "lid"),  # upright can seen from above; mark = band style
    "bottle": ("body", "cap", "cap ring"),  # upright bottle; mark = "clear" | "plastic" | "glass"
    "carton": ("panel", "print", "cap"),  # gable-top carton seen from above
    "cup": ("rim", "lid foil", "lid print"),
    "box": ("body", "band", "logo"),  # lying flat, front panel up; mark = logo shape
    "block": ("foil", "foil fold", "print"),  # foil-wrapped block (butter)
    "bag": ("film", "panel", "print"),  # pillow bag lying flat; mark = panel shape
    "tray": ("tray", "content", "label"),  # film-wrapped tray; mark = content kind
    "eggbox": ("card", "card shadow", "label"),
}


def _ean(body12: str) -> str:
    """EAN-13 with a valid check digit."""
    digits = [int(c) for c in body12]
    total = sum(d * (3 if i % 2 else 1) for i, d in enumerate(digits))
    return body12 + str((10 - total % 10) % 10)


CATALOG: tuple[Product, ...] = (
    # ----------------------------------------------------- loose produce, priced per kg
    Product("4011", "Banana", 199, True, 120.0, "banana",
            ((45, 205, 240), (25, 150, 205), (30, 55, 80), (60, 140, 120)), "", (190.0, 62.0)),
    Product("4016", "Apple red", 349, True, 180.0, "apple",
            ((45, 35, 185), (35, 20, 115), (70, 170, 225), (30, 60, 95)), "", (80.0, 78.0)),
    Product("4017", "Apple green", 329, True, 175.0, "apple",
            ((80, 205, 140), (45, 140, 90), (120, 230, 210), (30, 60, 95)), "", (78.0, 76.0)),
    Product("4012", "Orange", 279, True, 200.0, "citrus",
            ((25, 140, 245), (10, 95, 205), (120, 200, 255), (50, 110, 95)), "", (80.0, 80.0)),
    Product("4053", "Lemon", 399, True, 110.0, "lemon",
            ((50, 225, 245), (25, 180, 215), (170, 250, 255), (45, 200, 180)), "", (84.0, 60.0)),
    Product("4664", "Tomato", 449, True, 110.0, "tomato",
            ((45, 45, 225), (30, 25, 150), (205, 205, 255), (45, 135, 55)), "", (70.0, 68.0)),
    Product("4062", "Cucumber", 299, True, 300.0, "cucumber",
            ((45, 95, 35), (25, 60, 20), (95, 170, 120)), "", (210.0, 54.0)),
    Product("4060", "Broccoli", 399, True, 350.0, "broccoli",
            ((60, 120, 45), (30, 75, 25), (130, 195, 150)), "", (140.0, 110.0)),
    Product("4072", "Potato", 149, True, 170.0, "potato",
            ((115, 165, 205), (80, 120, 165), (60, 90, 125)), "", (95.0, 68.0)),
    Product("4688", "Red bell pepper", 599, True, 160.0, "pepper",
            ((35, 30, 205), (20, 15, 130), (45, 125, 60)), "", (92.0, 88.0)),
    Product("4046", "Avocado", 899, True, 200.0, "avocado",
            ((45, 70, 45), (25, 40, 25), (75, 110, 80)), "", (105.0, 72.0)),
    # ------------------------------------------------------------ cans (seen from above)
    Product(_ean("500011263792"), "Cola 330 ml can", 129, False, 350.0, "can",
            ((35, 25, 205), (245, 245, 245), (200, 200, 205)), "COLA", (66.0, 66.0), "wave"),
    Product(_ean("500011263800"), "Cherry cola 330 ml can", 139, False, 350.0, "can",
            ((35, 25, 205), (95, 20, 105), (200, 200, 205)), "CHERRY", (66.0, 66.0), "wave"),
    Product(_ean("544900013180"), "Lemon soda 330 ml can", 119, False, 350.0, "can",
            ((45, 150, 40), (45, 225, 245), (200, 200, 205)), "LEMON", (66.0, 66.0), "ring"),
    Product(_ean("900249001003"), "Energy drink 250 ml can", 179, False, 275.0, "can",
            ((160, 70, 20), (200, 200, 210), (185, 185, 190)), "ENERGY", (54.0, 54.0), "stripes"),
    # ---------------------------------------------------------- bottles, cartons, cups
    Product(_ean("761303000115"), "Still water 1.5 L", 69, False, 1540.0, "bottle",
            ((225, 200, 170), (200, 110, 25), (230, 230, 235)), "", (90.0, 90.0), "clear"),
    Product(_ean("400140500106"), "Orange juice 1 L", 249, False, 1060.0, "bottle",
            ((35, 145, 250), (40, 150, 40), (235, 240, 240)), "", (82.0, 82.0), "plastic"),
    Product(_ean("841012345671"), "Red wine 0.75 L", 799, False, 1250.0, "bottle",
            ((40, 65, 30), (40, 150, 200), (25, 25, 110)), "", (76.0, 76.0), "glass"),
    Product(_ean("590000012345"), "Milk 1 L carton", 109, False, 1035.0, "carton",
            ((240, 240, 238), (190, 100, 30), (200, 90, 30)), "MILK", (70.0, 70.0)),
    Product(_ean("301762012345"), "Strawberry yogurt 150 g", 59, False, 160.0, "cup",
            ((245, 245, 245), (190, 150, 240), (70, 40, 200)), "YOG", (75.0, 75.0)),
    # ------------------------------------------------------------ boxes, lying flat
    Product(_ean("500015901234"), "Corn flakes 500 g", 329, False, 540.0, "box",
            ((40, 200, 240), (35, 35, 200), (45, 140, 60)), "CORN FLAKES", (250.0, 180.0), "circle"),
    Product(_ean("500015905678"), "Bran flakes 500 g", 349, False, 540.0, "box",
            ((40, 200, 240), (35, 70, 120), (20, 120, 230)), "BRAN FLAKES", (250.0, 180.0), "star"),
    Product(_ean("871124001234"), "Green tea 20 bags", 249, False, 45.0, "box",
            ((60, 130, 40), (230, 240, 240), (40, 180, 220)), "GREEN TEA", (130.0, 75.0), "leaf"),
    Product(_ean("571006012345"), "Butter 250 g", 299, False, 255.0, "block",
            ((70, 185, 225), (35, 125, 180), (160, 60, 20)), "BUTTER", (110.0, 68.0)),
    # ------------------------------------------------------------------- bags
    Product(_ean("872000012345"), "Crisps salted 150 g", 199, False, 160.0, "bag",
            ((175, 95, 30), (45, 215, 245), (30, 30, 40)), "CRISPS", (170.0, 240.0), "oval"),
    Product(_ean("872000067890"), "Crisps paprika 150 g", 199, False, 160.0, "bag",
            ((40, 45, 205), (45, 215, 245), (30, 30, 40)), "PAPRIKA", (170.0, 240.0), "oval"),
    Product(_ean("800123456789"), "Coffee beans 500 g", 899, False, 510.0, "bag",
            ((40, 38, 42), (60, 165, 215), (240, 240, 240)), "COFFEE", (130.0, 210.0), "valve"),
    # ------------------------------------------------------------------- trays
    Product(_ean("200123400000"), "Minced beef 500 g", 549, False, 520.0, "tray",
            ((235, 235, 232), (80, 80, 175), (240, 250, 250)), "BEEF", (190.0, 140.0), "mince"),
    Product(_ean("871234500011"), "Strawberries 400 g", 399, False, 420.0, "tray",
            ((150, 185, 160), (50, 40, 210), (240, 250, 250)), "", (160.0, 110.0), "berries"),
    Product(_ean("871765400012"), "Eggs 6 pack", 289, False, 390.0, "eggbox",
            ((165, 175, 180), (120, 130, 135), (60, 120, 40)), "EGGS", (155.0, 105.0)),
)

_BY_SKU: dict[str, Product] = {p.sku: p for p in CATALOG}
if len(_BY_SKU) != len(CATALOG):  # pragma: no cover - guards edits to the table
    raise RuntimeError("duplicate sku in CATALOG")


def by_sku(sku: str) -> Product:
    """The product with this sku; KeyError if there is none."""
    try:
        return _BY_SKU[sku]
    except KeyError:
        raise KeyError(f"unknown sku {sku!r}") from None


def write_catalog(path, version: str = "factory"):
    """The product database of this catalogue (what the sync bundles carry too), as a checkout
    line's factory catalog.path. Returns its agent.catalog.CatalogInfo."""
    from agent import catalog
    from models.make_bundle import simulator_products

    return catalog.build(path, simulator_products(), version=version)


def write_csv(path) -> None:
    """This catalogue as the CSV `edge-agent catalog build --csv` reads."""
    import csv

    from agent.catalog import PRODUCT_COLUMNS
    from models.make_bundle import simulator_products

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(PRODUCT_COLUMNS))
        writer.writeheader()
        for p in simulator_products():
            writer.writerow({"sku": p.sku, "name": p.name, "price_cents": p.price_cents, "currency": p.currency,
                             "priced_by_weight": int(p.priced_by_weight), "weight_g": p.weight_g,
                             "barcode": p.barcode or "", "label": p.label})


def main(argv: list[str] | None = None) -> int:
    """python -m hw_sim.products OUT.db | --csv OUT.csv: the simulator's product database."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m hw_sim.products", description=main.__doc__)
    parser.add_argument("out", help="the SQLite file to write, or with --csv the CSV file")
    parser.add_argument("--csv", action="store_true", help="write the catalogue as CSV (for edge-agent catalog build)")
    parser.add_argument("--version", default="factory")
    args = parser.parse_args(argv)
    if args.csv:
        write_csv(args.out)
        print(f"{args.out}: {len(CATALOG)} products (CSV)")
    else:
        info = write_catalog(args.out, args.version)
        print(f"{info.path}: {info.products} products, version {info.version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
