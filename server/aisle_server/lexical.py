"""BM25 over the catalog texts (``bm25s``): the lexical half of hybrid search.

Dense towers miss what shoppers type literally — part numbers, brands, sizes — and BM25 misses
paraphrases; fusing the two beats either alone on the BigBasket search proxy (figures:
docs/results.md, "Hybrid search"): ``ranking`` adds ``lexical_weight`` × the BM25 score, scaled to
[0, 1] per query, to the dense cosine. ``bm25s`` keeps the index as sparse
matrices saved as ``.npy``/JSON, so loading it involves no pickle.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

STOPWORDS = "en"


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """The terms BM25 indexes and looks up (lowercased, English stopwords removed)."""
    import bm25s

    return bm25s.tokenize(list(texts), stopwords=STOPWORDS, return_ids=False, show_progress=False)


class LexicalIndex:
    def __init__(self, retriever: object):
        self.retriever = retriever
        self.vocab = retriever.vocab_dict  # type: ignore[attr-defined]  # bm25s ships no type hints

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

    def scores(self, query: str) -> np.ndarray | None:
        """BM25 score of every item scaled to [0, 1] by the best one; None if no query term is known."""
        tokens = [t for t in tokenize([query])[0] if t in self.vocab]
        if not tokens:
            return None
        raw = np.asarray(self.retriever.get_scores(tokens), dtype=np.float32)  # type: ignore[attr-defined]  # bm25s ships no type hints
        top = float(raw.max())
        return raw / top if top > 0 else None
