"""Where the merchandising rules meet the ranking stage: one call, after scoring, before diversity.

``ranking`` hands over the scored candidates (``scoring.ScoreTerms`` and their order); this module
adds the pinned items the request may be shown, runs ``rules.apply`` and hands back what ranking
needs to finish the page: the (possibly grown) terms, the scores with the rules' deltas, the new
order, the page as positions in that order, and per page item what each rule did (explanations).

A pinned item that retrieval did not bring gets the terms ``ranking`` gives it (``score_rows``):
its cosine alone for a search or a feed (no lexical or prior terms: those are computed for the
retrieved candidates only), its usual score in the cold fallback.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from . import rules
from .index import CatalogIndex
from .scoring import ScoreTerms


@dataclass(frozen=True)
class Merchandised:
    terms: ScoreTerms  # the candidates' terms, pinned items added
    scores: np.ndarray  # float64 per ``terms.rows``: the terms' total plus the rules' delta
    delta: np.ndarray  # float64 per ``terms.rows``: what boosts and buries added
    order: np.ndarray  # positions in ``terms``, best first; filtered-out candidates left out
    picked: np.ndarray  # the page: indices into ``order``, in page order
    outcome: rules.Outcome  # what each rule did, per position in ``terms`` (read for explanations)

    def effects_of(self, positions: Sequence[int]) -> list[list[dict[str, object]]]:
        return self.outcome.effects(positions)


def apply(
    index: CatalogIndex,
    rule_set: rules.RuleSet,
    context: dict[str, object],
    k: int,
    now: float,
    allowed: np.ndarray,
    score_rows: Callable[[np.ndarray], ScoreTerms],
    terms: ScoreTerms,
    scores: np.ndarray,
    order: np.ndarray,
    pick: Callable[[np.ndarray, np.ndarray, int], Sequence[int]],
) -> Merchandised | None:
    """The page with ``rule_set``'s rules applied; None when none of them applies to this request.

    ``score_rows(rows)``: the terms of pinned rows the candidates lack (by ``rows``' order);
    ``scores``: what ranking ordered ``terms.rows`` by (their sum, or the learned ranker's score);
    ``pick(rows, scores, n)``: the ranking stage's diversity step over candidates best first.
    """
    in_force = rules.active(rule_set, context)
    if not in_force:
        return None
    pins = rules.pin_rows(index, in_force)
    pinned = np.unique(np.fromiter((row for row in pins.values() if row >= 0), dtype=np.int64))
    pinned = pinned[allowed[pinned]] if len(pinned) else pinned
    base = np.asarray(scores, dtype=np.float64)
    new = pinned[~np.isin(pinned, terms.rows)]  # every scored row is an allowed candidate: rules see them all
    if len(new):
        terms = terms.concat(score_rows(new))
        base = np.concatenate([base, terms.total()[len(base) :]])

    rows = terms.rows
    outcome = rules.apply(
        in_force,
        index,
        rows,
        base,
        k,
        context,
        now,
        lambda positions, scores, n: pick(rows[positions], scores, n),
        rule_set.counts,
        rule_set.rng,
        pins,
    )
    where = np.empty(len(rows), dtype=np.int64)  # position in ``terms`` → its index in the order
    where[outcome.order] = np.arange(len(outcome.order))
    picked = where[np.asarray(outcome.page, dtype=np.int64)]
    return Merchandised(terms, base + outcome.delta, outcome.delta, outcome.order, picked, outcome)
