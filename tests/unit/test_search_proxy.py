"""The BigBasket search proxy finds the shared catalog where a checkout keeps it: ``../shared`` beside it."""

from __future__ import annotations

from pathlib import Path

from aisle_export.judge.search import DEFAULT_CSV

ROOT = Path(__file__).resolve().parents[2]


def test_the_default_products_file_is_in_the_shared_folder_beside_the_checkout():
    assert ROOT.parent / "shared" / "data" / "bigbasket" / "products.csv" == DEFAULT_CSV
