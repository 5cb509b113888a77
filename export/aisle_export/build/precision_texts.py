"""Real text for calibrating reduced-precision encoders, and different real text for judging them.

Why two disjoint sets: a quantizer calibrated on the sentences it is then scored on would look
better than it is on traffic it has never seen. Calibration uses the product strings of
:data:`CALIBRATION_PRODUCTS` (BigBasket-style grocery/household listings) plus every other text of
the catalog; the gates score :data:`HELD_OUT_TEXTS` (other product listings and search queries,
never used for calibration), the export parity sentences, and the *other* half of the catalog.
:func:`split_catalog_texts` makes that split deterministic, and a unit test checks the sets do not
overlap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aisle_export.build.onnx_export import DEFAULT_PARITY_SENTENCES

#: Grocery / household listings in the style of an Indian online supermarket catalog.
CALIBRATION_PRODUCTS: tuple[str, ...] = (
    "Fortune Sunlite Refined Sunflower Oil 1 L Pouch. Edible Oils & Ghee",
    "Aashirvaad Shudh Chakki Atta 5 kg. Atta, Flours & Sooji",
    "Tata Salt Vacuum Evaporated Iodised Salt 1 kg. Salt, Sugar & Jaggery",
    "Amul Pure Ghee 1 L Tin. Edible Oils & Ghee",
    "Maggi 2-Minute Masala Instant Noodles 70 g (Pack of 12). Noodles, Pasta & Vermicelli",
    "Brooke Bond Red Label Tea 500 g. Tea",
    "Nescafe Classic Instant Coffee 100 g Jar. Coffee",
    "Surf Excel Easy Wash Detergent Powder 1.5 kg. Detergents & Dishwash",
    "Vim Dishwash Gel Lemon 750 ml. Detergents & Dishwash",
    "Colgate Strong Teeth Toothpaste 200 g. Oral Care",
    "Dettol Original Liquid Handwash Refill 750 ml. Bath & Hand Wash",
    "Dove Cream Beauty Bathing Bar 125 g (Pack of 3). Bath & Hand Wash",
    "Head & Shoulders Anti Dandruff Shampoo 340 ml. Hair Care",
    "Parachute 100% Pure Coconut Oil 500 ml. Hair Care",
    "Fresho Tomato - Hybrid 1 kg. Fresh Vegetables",
    "Fresho Onion 2 kg. Fresh Vegetables",
    "Fresho Banana - Robusta 6 pcs. Fresh Fruits",
    "Fresho Apple - Shimla 4 pcs (approx. 550 - 650 g). Fresh Fruits",
    "Fresho Coriander Leaves 100 g. Herbs & Seasonings",
    "Nandini GoodLife Toned Milk 500 ml Pouch. Dairy",
    "Amul Masti Spiced Buttermilk 200 ml Tetra Pak. Dairy",
    "Britannia Good Day Cashew Cookies 200 g. Biscuits & Cookies",
    "Parle-G Original Gluco Biscuits 800 g. Biscuits & Cookies",
    "Haldiram's Aloo Bhujia 400 g. Namkeen & Snacks",
    "Lay's India's Magic Masala Potato Chips 52 g. Chips & Crisps",
    "Kissan Mixed Fruit Jam 500 g. Spreads, Sauces & Ketchup",
    "MTR Ready to Eat Dal Makhani 300 g. Ready to Cook & Eat",
    "India Gate Basmati Rice Classic 5 kg. Rice & Rice Products",
    "Tata Sampann Unpolished Toor Dal 1 kg. Dals & Pulses",
    "Everest Kashmiri Lal Chilli Powder 100 g. Masalas & Spices",
    "MDH Garam Masala 100 g. Masalas & Spices",
    "Saffola Gold Pro Healthy Lifestyle Edible Oil 5 L Jar. Edible Oils & Ghee",
    "Kellogg's Corn Flakes Original 875 g. Breakfast Cereals",
    "Quaker Oats 1 kg Pouch. Breakfast Cereals",
    "Real Fruit Power Mixed Fruit Juice 1 L. Juices",
    "Coca-Cola Soft Drink 2.25 L Bottle. Soft Drinks",
    "Bisleri Packaged Drinking Water 1 L (Pack of 12). Water",
    "Pampers All Round Protection Pants Large 64 pcs. Diapers & Wipes",
    "Harpic Power Plus Toilet Cleaner Original 1 L. Cleaners",
    "Good Knight Gold Flash Liquid Vaporizer Refill 45 ml. Repellents",
    "Scotch-Brite Scrub Pad Large 3 pcs. Cleaning Accessories",
    "Prestige Svachh Stainless Steel Pressure Cooker 5 L. Cookware",
    "Milton Thermosteel Flip Lid Flask 1 L. Kitchen Storage",
    "Whisper Ultra Clean Sanitary Pads XL+ 30 pcs. Feminine Hygiene",
    "Pedigree Adult Dry Dog Food Chicken & Vegetables 3 kg. Pet Food",
    "Cadbury Dairy Milk Silk Chocolate Bar 150 g. Chocolates",
    "Paper Boat Aamras Mango Drink 200 ml. Juices",
    "Gillette Mach3 Razor with 1 Cartridge. Shaving Care",
)

#: Listings and shopper queries that are never calibrated on: product pages of other kinds,
#: typed searches, misspellings, other languages.
HELD_OUT_TEXTS: tuple[str, ...] = (
    "Sony WH-1000XM5 wireless noise cancelling headphones, black",
    "Logitech MX Master 3S performance wireless mouse",
    "Instant Pot Duo 7-in-1 electric pressure cooker 6 quart",
    "Levi's 501 original fit men's jeans, medium stonewash",
    "Adidas Ultraboost Light running shoes women's size 8",
    "Kindle Paperwhite 16 GB with adjustable warm light",
    "Philips Hue White and Color Ambiance starter kit E27",
    "Bosch 18V cordless drill driver with two batteries",
    "Le Creuset enameled cast iron Dutch oven 5.5 qt, cerise",
    "Patagonia Better Sweater fleece jacket, navy",
    "Ray-Ban Wayfarer classic sunglasses polarized",
    "Nintendo Switch OLED model with white Joy-Con",
    "Yeti Rambler 20 oz tumbler with MagSlider lid",
    "Crayola 64 count crayons with built-in sharpener",
    "Bose SoundLink Flex portable Bluetooth speaker",
    "cheap wireless earbuds for the gym",
    "gift ideas for a 10 year old who loves science",
    "vegan protein powder chocolate no added sugar",
    "waterproof hiking boots wide fit",
    "coffee grinder burr for espresso",
    "baby stroller lightweight foldable",
    "air fryer 5 litre family size",
    "standing desk electric height adjustable",
    "laptop backpack 15.6 inch anti theft",
    "blue light blocking glasses",
    "sunscreen spf 50 for sensitive skin",
    "bluetooth speeker waterprof",  # misspelled on purpose: real search logs are full of them
    "iphon charger cabel",
    "Kaffeevollautomat mit Milchaufschäumer",
    "zapatillas de running para hombre",
    "montre connectée étanche sport",
    "a feel-good comedy for a family movie night",
    "classic sci-fi film about robots and artificial intelligence",
    "dark crime thriller set in los angeles",
    "animated movie about toys that come alive",
    "1950s western with a lone gunslinger",
    "war drama based on a true story",
    "musical with singing and dancing in paris",
    "Godfather, The (1972)",
    "Pulp Fiction (1994)",
    "Casablanca (1942)",
    "Princess Mononoke (Mononoke-hime) (1997)",
    "Léon: The Professional (1994)",
    "Back to the Future Part II (1989)",
)

#: Queries for the top-10 retrieval agreement gate (searches a shopper or viewer would type).
RETRIEVAL_QUERIES: tuple[str, ...] = (
    "toy story",
    "space adventure with aliens",
    "romantic comedy in new york",
    "scary haunted house horror",
    "funny animated film for kids",
    "mafia crime family saga",
    "science fiction with time travel",
    "world war two drama",
    "musical",
    "courtroom drama",
    "disney cartoon",
    "martial arts action",
    "sad love story",
    "film noir detective",
    "spy thriller with james bond",
    "documentary",
    "western cowboys",
    "zombie movie",
    "a heist gone wrong",
    "monster in the ocean",
    "superhero comic book movie",
    "coming of age high school",
    "road trip comedy",
    "political thriller in washington",
    "epic fantasy with swords and magic",
    "psychological thriller about a serial killer",
    "sports movie about boxing",
    "historical costume drama in england",
    "alien invasion of earth",
    "robot from the future",
    "dinosaurs",
    "christmas family movie",
    "jazz musician biography",
    "gangsters in chicago",
    "submarine war film",
    "teen slasher",
    "shakespeare adaptation",
    "french romance",
    "kung fu",
    "mystery on a train",
    "star wars",
    "the godfather",
    "batman",
    "james cameron action movie",
    "hitchcock suspense",
    "pixar",
    "movies with tom hanks",
    "stanley kubrick",
    "oscar winning best picture",
    "buddy cop comedy",
    "lawyer legal thriller",
    "prison escape",
    "vampire",
    "pirates on the high seas",
    "boxing champion",
    "dance movie",
    "wedding comedy",
    "hostage situation on a plane",
    "outer space disaster",
    "cartoon animals talking",
    "nuclear war",
    "haunted by a ghost",
    "sherlock holmes mystery",
    "young wizard",
    "cold war spies in russia",
    "vietnam war",
    "tearjerker about a dying mother",
    "kids baseball team",
    "volcano eruption",
    "tornado chasers",
    "king arthur and the knights",
    "cyberpunk hackers",
    "bank robbery",
    "small town murder investigation",
    "aliens in the desert",
    "english period romance",
    "chinese historical epic",
    "silent film comedy",
    "dog adventure for kids",
    "biopic of a rock star",
)


@dataclass(frozen=True)
class GateTexts:
    """The text a precision variant is calibrated on and, separately, judged on."""

    calibration: tuple[str, ...]
    evaluation: tuple[str, ...]
    queries: tuple[str, ...]
    catalog: tuple[str, ...]


def split_catalog_texts(
    catalog_texts: Sequence[str], max_calibration: int = 96, max_evaluation: int = 160
) -> tuple[list[str], list[str]]:
    """Even positions (deduplicated) may calibrate; odd positions that are not among them evaluate.

    Interleaving rather than halving keeps both halves spread over the whole catalog (MovieLens
    is ordered roughly by release), and the caps keep export time modest.
    """
    calibration = list(dict.fromkeys(catalog_texts[0::2]))
    stride = max(1, len(calibration) // max_calibration) if max_calibration else 1
    calibration = calibration[::stride][:max_calibration]
    seen = set(calibration)
    evaluation = [t for t in dict.fromkeys(catalog_texts[1::2]) if t not in seen]
    stride = max(1, len(evaluation) // max_evaluation) if max_evaluation else 1
    return calibration, evaluation[::stride][:max_evaluation]


def gate_texts(catalog_texts: Sequence[str]) -> GateTexts:
    """Calibration and held-out evaluation text for one catalog (see the module docstring)."""
    catalog_calibration, catalog_evaluation = split_catalog_texts(catalog_texts)
    calibration = tuple(dict.fromkeys([*CALIBRATION_PRODUCTS, *catalog_calibration]))
    held_out = [*HELD_OUT_TEXTS, *DEFAULT_PARITY_SENTENCES, *catalog_evaluation]
    evaluation = tuple(t for t in dict.fromkeys(held_out) if t not in set(calibration))
    return GateTexts(
        calibration=calibration,
        evaluation=evaluation,
        queries=tuple(q for q in RETRIEVAL_QUERIES if q not in set(calibration)),
        catalog=tuple(catalog_texts),
    )
