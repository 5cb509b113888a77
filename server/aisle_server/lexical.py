"""BM25 over the catalog texts (``bm25s``): the lexical half of hybrid search.

Dense towers miss what shoppers type literally — part numbers, brands, sizes — and BM25 misses
paraphrases; fusing the two beats either alone on the BigBasket search proxy (figures:
docs/results.md, "Hybrid search"): ``ranking`` adds ``lexical_weight`` × the BM25 score, scaled to
[0, 1] per query, to the dense cosine. ``bm25s`` keeps the index as sparse
matrices saved as ``.npy``/JSON, so loading it involves no pickle.

Shoppers misspell, and BM25 matches terms exactly: a query term the catalog never uses
(``shampo``) would add nothing. :class:`SpellCorrector` maps such a term to the catalog term it most
likely meant — the one fewest edits away, the most common of those — with ``symspellpy``'s
symmetric-delete lookup, built from the index's own vocabulary when the index loads. Terms the
catalog uses are never touched, so a correctly spelled query scores exactly as without it, and
nor is a plural or singular of a catalog term (``sauces`` for ``sauce``): that is a word form, not a
typo, and matching word forms is the index's choice (a stemmer), not the speller's — on the search
proxy, turning clean plurals into the catalog's singulars lost more queries than it won.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .sparse_scores import SparseScores

STOPWORDS = "en"
#: Terms shorter than this are never corrected: one edit away from a three-letter word is nearly
#: every other three-letter word.
MIN_CORRECTED_LENGTH = 4
#: Terms this long or longer may be two edits from the catalog term; shorter ones one edit.
TWO_EDITS_FROM_LENGTH = 8


#: ``bm25s.tokenize``'s default term pattern (two or more word characters).
_TERM = re.compile(r"(?u)\b\w\w+\b")


@functools.cache
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """The terms BM25 indexes and looks up (lowercased, English stopwords removed): what
    ``bm25s.tokenize`` gives (its pattern, its stopwords), without the progress bars and
    vocabulary it builds on every call — a query's terms in microseconds, not a fraction of a
    millisecond (a test holds the two equal)."""
    stop = _stopwords()
    return [[term for term in _TERM.findall(text.lower()) if term not in stop] for text in texts]


class SpellCorrector:
    """Query terms the catalog never uses → the catalog term they most likely meant (or None)."""

    def __init__(self, document_frequency: Mapping[str, int]):
        from symspellpy import SymSpell

        self.terms = document_frequency
        self._symspell = SymSpell(max_dictionary_edit_distance=2)
        for term, count in document_frequency.items():
            if len(term) >= MIN_CORRECTED_LENGTH - 1 and count > 0 and term.isalpha():
                self._symspell.create_dictionary_entry(term, count)

    def correct(self, term: str) -> str | None:
        """``term`` itself when the catalog uses it; else the catalog term fewest edits away (one
        edit below :data:`TWO_EDITS_FROM_LENGTH` letters, two from it; ties: the one in most items)
        unless the two are singular and plural; None for short terms and terms with digits
        (``500ml`` is not a typo of ``200ml``)."""
        if term in self.terms:
            return term
        if len(term) < MIN_CORRECTED_LENGTH or not term.isalpha():
            return None
        from symspellpy import Verbosity

        if any(form in self.terms for form in _word_forms(term)):
            return None
        edits = 2 if len(term) >= TWO_EDITS_FROM_LENGTH else 1
        found = self._symspell.lookup(term, Verbosity.TOP, max_edit_distance=edits)
        return str(found[0].term) if found else None


def _word_forms(term: str) -> list[str]:
    """``term``'s English singular or plural (``-s``, ``-es``) forms."""
    forms = [term + "s", term + "es"]
    if term.endswith("s"):
        forms.append(term[:-1])
    if term.endswith("es"):
        forms.append(term[:-2])
    return forms


class LexicalIndex:
    def __init__(self, retriever: object):
        self.retriever = retriever
        self.vocab = retriever.vocab_dict  # type: ignore[attr-defined]  # bm25s ships no type hints
        indptr = np.asarray(retriever.scores["indptr"])  # type: ignore[attr-defined]  # CSC over terms
        in_items = np.diff(indptr)
        self.speller = SpellCorrector(
            {term: int(in_items[i]) for term, i in self.vocab.items() if i < len(in_items) and term}
        )

    @classmethod
    def build(cls, texts: Sequence[str]) -> LexicalIndex:
        import bm25s

        retriever = bm25s.BM25()
        retriever.index(bm25s.tokenize(list(texts), stopwords=STOPWORDS, show_progress=False), show_progress=False)
        return cls(retriever)

    def save(self, directory: Path) -> None:
        self.retriever.save(str(directory))  # type: ignore[attr-defined]  # bm25s ships no type hints

    @classmethod
    def load(cls, directory: Path) -> LexicalIndex:
        import bm25s

        return cls(bm25s.BM25.load(str(directory), mmap=False))

    def terms(self, query: str, correct_typos: bool = True) -> list[str]:
        """The query's terms the index knows, misspelled ones corrected (``correct_typos``)."""
        terms = tokenize([query])[0]
        if correct_typos:
            return [found for term in terms if (found := self.speller.correct(term)) is not None]
        return [term for term in terms if term in self.vocab]

    def matches(self, query: str, correct_typos: bool = True) -> SparseScores | None:
        """:meth:`scores` held for the items that contain a query term only: read from the index's
        postings of the query's terms (its CSC columns), never a score per catalog item. The same
        float32 sums, added in the same term order as ``bm25s``, so the same values."""
        tokens = self.terms(query, correct_typos)
        if not tokens:
            return None
        if getattr(self.retriever, "nonoccurrence_array", None) is not None:  # a BM25 variant (BM25L, BM25+)
            dense = self.scores(query, correct_typos)  # where a missing term still scores: every item
            if dense is None:
                return None
            rows = np.flatnonzero(dense)
            return SparseScores(rows.astype(np.int64), dense[rows], len(dense))
        scores = self.retriever.scores  # type: ignore[attr-defined]  # bm25s ships no type hints
        data, indices, indptr = scores["data"], scores["indices"], scores["indptr"]
        ids = [self.vocab[term] for term in tokens]
        docs = np.concatenate([indices[indptr[i] : indptr[i + 1]] for i in ids])
        if not len(docs):
            return None
        values = np.concatenate([data[indptr[i] : indptr[i + 1]] for i in ids]).astype(np.float32)
        if len(ids) == 1:  # a term's postings: its items, ascending, once each
            rows, sums = docs, values
        else:
            rows, sums = _merged_postings(docs, values)
        top = float(sums.max())
        if top <= 0:
            return None
        return SparseScores(rows.astype(np.int64), sums / np.float32(top), int(scores["num_docs"]))

    def scores(self, query: str, correct_typos: bool = True) -> np.ndarray | None:
        """BM25 score of every item scaled to [0, 1] by the best one; None if no query term is known."""
        tokens = self.terms(query, correct_typos)
        if not tokens:
            return None
        raw = np.asarray(self.retriever.get_scores(tokens), dtype=np.float32)  # type: ignore[attr-defined]  # bm25s ships no type hints
        top = float(raw.max())
        return raw / top if top > 0 else None


def _merged_postings(docs: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(each item once, ascending; the float32 sum of its values), from several terms' postings
    concatenated in term order (``docs``: each term's items ascending).

    A stable sort of ascending runs is a merge (timsort: O(P log terms), not O(P log P)), and it
    keeps each item's values in term order, so adding them in sorted order sums them as ``bm25s``
    does, bitwise."""
    order = np.argsort(docs, kind="stable")
    docs = docs[order]
    first = np.empty(len(docs), dtype=bool)
    first[0] = True
    np.not_equal(docs[1:], docs[:-1], out=first[1:])
    position = np.cumsum(first) - 1  # each posting's item, counted from 0 in ascending order
    sums = np.zeros(int(position[-1]) + 1, dtype=np.float32)
    np.add.at(sums, position, values[order])
    return docs[first], sums
