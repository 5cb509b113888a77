"""BM25's typo tolerance: misspelled query terms find the catalog term they meant; spelled ones are untouched."""

from __future__ import annotations

import random

import numpy as np
import pytest
from tests.unit.tiny_catalog import tiny_index

from aisle_export.judge.search import misspell
from aisle_server.lexical import LexicalIndex, SpellCorrector
from aisle_server.ranking import RankingConfig, RankRequest, rank

TEXTS = ["red shampoo bottle", "blue shampoo", "green tea leaves", "tea cup", "chocolate biscuits 500ml", "sham pool"]


@pytest.fixture(scope="module")
def lexical() -> LexicalIndex:
    return LexicalIndex.build(TEXTS)


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("shampo", ["shampoo"]),  # a letter dropped
        ("shampooo", ["shampoo"]),  # a letter added
        ("shamboo", ["shampoo"]),  # a letter replaced
        ("shmapoo", ["shampoo"]),  # two letters swapped: one edit
        ("chocolatte biscuts", ["chocolate", "biscuits"]),  # 9 letters: two edits allowed
        ("shampoo", ["shampoo"]),  # spelled right: itself
    ],
)
def test_a_misspelled_term_becomes_the_catalog_term_it_meant(lexical, typed, meant):
    assert lexical.terms(typed) == meant
    assert lexical.terms(typed, correct_typos=False) == [t for t in meant if t == typed]


def test_short_terms_and_terms_with_digits_are_never_corrected(lexical):
    assert lexical.terms("te") == []  # two letters: nearly everything is one edit away
    assert lexical.terms("600ml") == []  # a size is not a typo of another size
    assert lexical.terms("sham") == ["sham"]  # a catalog word stays itself, not the more common "shampoo"


def test_a_short_word_gets_one_edit_and_the_most_common_term_wins_a_tie():
    speller = SpellCorrector({"bread": 5, "broad": 1, "brand": 9})
    assert speller.correct("brxad") == "bread"  # one edit from bread and broad; bread is in more items
    assert speller.correct("bxxad") is None  # two edits: too many for five letters
    assert speller.correct("breadstick") is None  # nothing within two edits


def test_scores_with_a_typo_equal_the_scores_of_the_spelled_query(lexical):
    np.testing.assert_array_equal(lexical.scores("blue shampo"), lexical.scores("blue shampoo"))
    assert lexical.scores("shampo", correct_typos=False) is None


def test_the_typo_tolerance_knob_switches_correction_in_ranking():
    index = tiny_index(12, 4, 0, np.zeros(12), 5, 3, {0: ([1], [1.0])})  # every third item a red shoe
    query = np.zeros(index.embeddings.shape[1], dtype=np.float32)
    query[0] = 1.0

    def search(text: str, tolerance: bool) -> list[str]:
        config = RankingConfig(search_mode="lexical", typo_tolerance=tolerance)
        return rank(index, RankRequest(query, [], np.zeros(0), 4, 0.0, config, text)).item_ids

    assert search("reed shoe", True) == search("red shoe", True)
    assert search("shooe", True) == search("shoe", True) != search("shooe", False)


def test_misspell_makes_one_edit_in_one_long_word():
    rng = random.Random(3)
    for query in ["Nivea Bathing Bars & Soaps", "Hair Oil & Serum", "Dettol Hand Wash"] * 20:
        typo = misspell(query, rng)
        changed = [(a, b) for a, b in zip(query.split(" "), typo.split(" ")) if a != b]
        assert len(typo.split(" ")) == len(query.split(" ")) and len(changed) == 1
        word, wrong = changed[0]
        assert len(word) >= 4 and abs(len(word) - len(wrong)) <= 1 and word[0] == wrong[0]
    assert misspell("Tea & Oil", rng) == "Tea & Oil"  # no word of four letters or more


def test_a_plural_is_a_word_form_not_a_typo():
    speller = SpellCorrector({"sauce": 9, "gherkins": 3, "box": 4})
    assert speller.correct("sauces") is None  # the catalog says "sauce": matching forms is the index's job
    assert speller.correct("gherkin") is None
    assert speller.correct("boxes") is None
    assert speller.correct("sause") == "sauce"
