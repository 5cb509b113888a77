"""A small time-aware causal transformer that turns a shopper's recent items into a user vector.

The feed's default interest (``aisle_server.ranking.session_interest``) is the recency-weighted mean
of the history's item embeddings: it cannot learn that a film watched after another predicts a
third, that a one-star rating means "less of this", or that a burst of activity an hour ago says
more than a session last month. This encoder (SASRec, Kang & McAuley 2018, with TiSASRec-style
time features, Li et al. 2020) learns those from the interaction log and outputs ``u`` in the
item tower's space (dimension ``d``), scored against the catalog by inner product like the mean.

Item embeddings are *inputs* (the item tower's L2-normalized embeddings), never per-id parameters:
the model has no item table, so an item added after training is encoded the moment it is embedded.

Per history position ``i`` (left-padded, oldest → newest)::

    x_i = Linear(d→h)(e_i) + Event[event_i] + Gap[bucket(ts_i − ts_{i−1}) or FIRST] + Pos[#items after i]
    x   = Dropout(LayerNorm(x)) → ``layers`` pre-LN causal blocks → LayerNorm
    u_t = normalize(Linear(h→d)(x_t + NowGap[bucket(target_time − ts_t)]))

``bucket(gap_s) = clamp(floor(log2(1 + gap_s / 60)), 0, 31)`` is computed inside the graph from raw
float64 unix seconds (as exact threshold comparisons, so torch and ONNX Runtime agree at every
boundary), hence the server passes raw timestamps and ``now``.

Training is SASRec-style: every position ``t`` of a window of ``max_len + 1`` items predicts item
``t + 1`` at its real time; the loss is the softmax cross-entropy over the *whole catalog* (as in
``aisle finetune``: in-batch negatives are popularity-biased), logits ``u·E/temperature + β·prior``.
Items already in the window up to ``t`` are masked out (the feed never shows history back) and
positions whose target is a repeat are not scored (the evaluation scores new items only). A
catalog above ``full_softmax_max`` items is not scored whole: each step draws shared negatives
(half uniform, half by popularity) and corrects their logits by the draw probability (logQ,
:func:`sampled_loss`), so a step's time and memory follow the batch, not the catalog — over a
100,000-item catalog the full softmax held positions × 100,000 logits and their gradients.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn
from tqdm import tqdm

MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.json"
TORCH_FILE = "torch_model.pt"  # the trained weights, for parity checks and further training (not served)
FORMAT = "aisle-user-encoder/1"
INPUT_NAMES = ("item_embeddings", "timestamps", "event_ids", "mask", "now")
OUTPUT_NAME = "user_embedding"
N_BUCKETS = 32  # time-gap buckets 0..31
FIRST_BUCKET = N_BUCKETS  # the oldest item has no previous one: a bucket of its own
BUCKET_FORMULA = "clamp(floor(log2(1 + gap_seconds / 60)), 0, 31); negative or NaN gaps -> 0"
UNKNOWN_EVENT = "<unknown>"  # event id 0: padding and any type not seen in training
OPSET = 17
PARITY_THRESHOLD = 0.9999
PARITY_SEQUENCES = 96
PARITY_BATCH = 16


class ParityError(ValueError):
    """The exported graph disagrees with the torch model beyond the threshold."""


@dataclass(frozen=True)
class UserEncoderConfig:
    """Model size and training knobs; the defaults were picked on ML-100K's validation cut.

    On a machine shared with other jobs set ``threads=1``: one torch thread per core oversubscribes
    the cores and every step slows down several times.
    """

    max_len: int = 50  # history items the model reads (the most recent)
    hidden: int = 64
    heads: int = 2
    layers: int = 2
    dropout: float = 0.2
    epochs: int = 20
    batch_size: int = 128  # windows per step
    lr: float = 1e-2  # the lever that mattered on validation: 1e-3 underfits (docs/learning.md)
    weight_decay: float = 0.01
    temperature: float = 0.05
    full_softmax_max: int = 4096  # catalogs up to this size: the exact softmax over every item
    negatives: int = 2048  # larger catalogs: shared negatives drawn per step, logQ-corrected (sampled_loss)
    seed: int = 0
    threads: int = 0  # torch threads; 0 = torch's default


# --------------------------------------------------------------------------- model


def gap_buckets(gap_s: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """``clamp(floor(log2(1 + gap/60)), 0, 31)`` as a count of thresholds ``60·(2^k − 1)`` reached.

    Exact in float64 and identical in torch and ONNX Runtime (a float ``log`` could land either
    side of a boundary such as a 60 s gap); negative and NaN gaps reach no threshold → bucket 0.
    """
    return (gap_s.unsqueeze(-1) >= thresholds).to(torch.int64).sum(dim=-1)


class CausalBlock(nn.Module):
    """Pre-LN transformer block: ``x + Attn(LN(x))``, then ``x + FFN(LN(x))``, attention given as a mask.

    Written out instead of ``nn.TransformerEncoderLayer`` so the traced graph is plain MatMul/Softmax
    (no fast-path kernel choice baked in) and the (B, L, L) mask carries causality and padding.
    """

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden={hidden} must be a multiple of heads={heads}")
        self.heads, self.head_dim = heads, hidden // heads
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * hidden, hidden)
        )
        self.attn_drop, self.drop = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, n, h = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(~allowed.unsqueeze(1), float("-inf"))  # every row keeps its diagonal
        attended = self.attn_drop(torch.softmax(scores, dim=-1)) @ v
        x = x + self.drop(self.proj(attended.transpose(1, 2).reshape(b, n, h)))
        return x + self.drop(self.ffn(self.norm2(x)))


class UserEncoderModel(nn.Module):
    """The encoder (see the module docstring).

    ``forward`` is the served graph (one vector per history, at ``now``); training scores every
    position through ``hidden_states`` → ``pre_head`` → ``catalog_logits``; ``sequence`` is the
    same per-position output in plain form (the reference the loss test checks against).
    """

    def __init__(self, dim: int, n_events: int, config: UserEncoderConfig):
        super().__init__()
        self.max_len = config.max_len
        self.project = nn.Linear(dim, config.hidden)
        self.event = nn.Embedding(n_events, config.hidden)
        self.gap = nn.Embedding(N_BUCKETS + 1, config.hidden)
        self.position = nn.Embedding(config.max_len, config.hidden)
        self.now_gap = nn.Embedding(N_BUCKETS, config.hidden)
        self.norm_in, self.norm_out = nn.LayerNorm(config.hidden), nn.LayerNorm(config.hidden)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            CausalBlock(config.hidden, config.heads, config.dropout) for _ in range(config.layers)
        )
        self.out = nn.Linear(config.hidden, dim)
        # Popularity prior weight in logit units. Adam moves it about lr per step, so it ends near its
        # full travel and the network carries the rest of popularity in u itself: u ranks well with
        # little popularity weight at serving. So β shares the learning rate: a faster β would carry
        # popularity in the prior instead of in u, and the feed would rank well only with the prior's
        # weight applied (docs/results.md, "Design measurements behind code decisions").
        self.beta = nn.Parameter(torch.zeros(()))
        thresholds = 60.0 * (2.0 ** torch.arange(1, N_BUCKETS, dtype=torch.float64) - 1.0)
        self.register_buffer("thresholds", thresholds, persistent=False)

    def hidden_states(
        self, items: torch.Tensor, timestamps: torch.Tensor, events: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """(B, L, h) causal states; position t sees the real items at or before t only."""
        real = mask.to(torch.bool)
        ts = timestamps.to(torch.float64)
        previous = torch.cat([ts[:, :1], ts[:, :-1]], dim=1)
        before = torch.cat([torch.zeros_like(real[:, :1]), real[:, :-1]], dim=1)
        bucket = torch.where(
            real & ~before, torch.full_like(events, FIRST_BUCKET), gap_buckets(ts - previous, self.thresholds)
        )
        counts = real.to(torch.int64)
        after = counts.sum(dim=1, keepdim=True) - counts.cumsum(dim=1)  # real items newer than i
        x = (
            self.project(items)
            + self.event(events)
            + self.gap(bucket)
            + self.position(after.clamp(0, self.max_len - 1))
        )
        x = self.drop(self.norm_in(x))
        n = items.shape[1]
        index = torch.arange(n, device=items.device)
        causal = index.unsqueeze(1) >= index.unsqueeze(0)  # (L, L): key j ≤ query i
        itself = index.unsqueeze(1) == index.unsqueeze(0)  # no row is all-masked (no NaN)
        allowed = causal & (real.unsqueeze(1) | itself)
        for block in self.blocks:
            x = block(x, allowed)
        return self.norm_out(x)

    def pre_head(self, states: torch.Tensor, state_ts: torch.Tensor, target_ts: torch.Tensor) -> torch.Tensor:
        """States plus the embedding of the time until the moment of recommendation (still h-wide)."""
        bucket = gap_buckets(target_ts.to(torch.float64) - state_ts.to(torch.float64), self.thresholds)
        return states + self.now_gap(bucket)

    def head(self, states: torch.Tensor, state_ts: torch.Tensor, target_ts: torch.Tensor) -> torch.Tensor:
        """L2-normalized user vectors u = normalize(Linear(h→d)(pre_head))."""
        return nn.functional.normalize(self.out(self.pre_head(states, state_ts, target_ts)), p=2.0, dim=-1)

    def logit_factors(
        self, pre: torch.Tensor, catalog: torch.Tensor, prior: torch.Tensor, temperature: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(left, right)`` with ``left @ right.T`` = :meth:`catalog_logits` (one item's logit: a row dot)."""
        scale = 1.0 / (self.out(pre).norm(dim=-1, keepdim=True).clamp(min=1e-12) * temperature)  # F.normalize's eps
        left = torch.cat([pre * scale, scale, self.beta.expand(len(pre), 1)], dim=1)
        right = torch.cat([catalog @ self.out.weight, (catalog @ self.out.bias)[:, None], prior[:, None]], dim=1)
        return left, right

    def catalog_logits(
        self, pre: torch.Tensor, catalog: torch.Tensor, prior: torch.Tensor, temperature: float
    ) -> torch.Tensor:
        """(P, N) training logits ``u·E / temperature + β·prior`` for ``u = head(...)``, as ONE product.

        ``u·e = (pre·(Wᵀe) + b·e) / ‖W pre + b‖``, so with ``s = 1 / (‖W pre + b‖ · temperature)``
        the logits are ``[pre·s, s, β] · [E W, E b, prior]ᵀ``: the catalog is projected to h once per
        step instead of every position to d (d/h = 6× fewer FLOPs) and no (P, N)-sized scaling or
        prior pass is needed — on a CPU those full-catalog passes dominate a step.
        Equal to ``head(...) @ catalog.T / temperature + β·prior`` up to rounding.
        """
        left, right = self.logit_factors(pre, catalog, prior, temperature)
        return left @ right.T

    def sequence(
        self,
        items: torch.Tensor,
        timestamps: torch.Tensor,
        events: torch.Tensor,
        mask: torch.Tensor,
        target_ts: torch.Tensor,
    ) -> torch.Tensor:
        """(B, L, d) user vectors at every position, each for its own target time (training)."""
        return self.head(self.hidden_states(items, timestamps, events, mask), timestamps, target_ts)

    def forward(
        self,
        item_embeddings: torch.Tensor,
        timestamps: torch.Tensor,
        event_ids: torch.Tensor,
        mask: torch.Tensor,
        now: torch.Tensor,
    ) -> torch.Tensor:
        """(B, d) user vector at the newest (last, input is left-padded) position for time ``now``."""
        states = self.hidden_states(item_embeddings, timestamps, event_ids, mask)
        return self.head(states[:, -1], timestamps[:, -1], now)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Windows:
    """Training windows of ``max_len + 1`` catalog rows, left-padded, as numpy arrays (W, max_len + 1)."""

    rows: np.ndarray  # int64 catalog rows (0 at padding)
    ts: np.ndarray  # float64 unix seconds
    events: np.ndarray  # int64 event ids (0 at padding)
    weights: np.ndarray  # float32 loss weight of each row as a *target* (0: not scored here)
    mask: np.ndarray  # bool: a real item


def event_vocabulary(sequences: Mapping[str, tuple[Sequence[str], np.ndarray, Sequence[str]]]) -> list[str]:
    """Index → event type; index 0 is the unknown/padding event, the rest sorted (reproducible)."""
    types = {str(e) for _, _, events in sequences.values() for e in events}
    return [UNKNOWN_EVENT, *sorted(types - {UNKNOWN_EVENT})]


def _user_rows(
    user: str,
    sequence: tuple,
    weights: Mapping[str, np.ndarray] | None,
    row_of: Mapping[str, int],
    event_of: Mapping[str, int],
) -> tuple[np.ndarray, ...]:
    """One user's catalog items as (rows, ts, event ids, weights), sorted by time (stable)."""
    items, ts, events = sequence
    ts = np.asarray(ts, dtype=np.float64)
    w = (
        np.ones(len(items), np.float32)
        if weights is None or user not in weights
        else np.asarray(weights[user], np.float32)
    )
    if not (len(items) == len(ts) == len(events) == len(w)):
        raise ValueError(f"user {user!r}: items, timestamps, events (and weights) differ in length")
    if not np.isfinite(ts).all():
        raise ValueError(f"user {user!r}: non-finite timestamps")
    if not (np.isfinite(w).all() and (w >= 0).all()):
        raise ValueError(f"user {user!r}: weights must be finite and >= 0")
    rows = np.array([row_of.get(str(item), -1) for item in items], dtype=np.int64)
    ids = np.array([event_of.get(str(e), 0) for e in events], dtype=np.int64)
    keep = np.flatnonzero(rows >= 0)
    keep = keep[np.argsort(ts[keep], kind="stable")]
    return rows[keep], ts[keep], ids[keep], w[keep]


def make_windows(
    sequences: Mapping[str, tuple[Sequence[str], np.ndarray, Sequence[str]]],
    row_of: Mapping[str, int],
    event_of: Mapping[str, int],
    max_len: int,
    weights: Mapping[str, np.ndarray] | None = None,
) -> tuple[Windows, int]:
    """Cut every user's history into windows of ``max_len + 1`` items; also return the skipped count.

    Windows are anchored at the *newest* item and step back ``max_len`` at a time, so each item is
    a target exactly once and the most recent targets — the situation served — get full context.
    A repeat (an item the user already had earlier, in or before the window) gets weight 0: the
    feed never recommends history back, so repeats are not what the model should learn to rank.
    """
    width = max_len + 1
    parts: list[tuple[np.ndarray, ...]] = []
    skipped = 0
    for user, sequence in sequences.items():
        rows, ts, ids, w = _user_rows(user, sequence, weights, row_of, event_of)
        skipped += len(sequence[0]) - len(rows)
        first = np.zeros(len(rows), bool)
        first[np.unique(rows, return_index=True)[1]] = True
        w = np.where(first, w, 0.0).astype(np.float32)
        for end in range(len(rows), 1, -max_len):
            start = max(0, end - width)
            parts.append((rows[start:end], ts[start:end], ids[start:end], w[start:end]))
    n = len(parts)
    out = Windows(
        np.zeros((n, width), np.int64),
        np.zeros((n, width), np.float64),
        np.zeros((n, width), np.int64),
        np.zeros((n, width), np.float32),
        np.zeros((n, width), bool),
    )
    for i, (rows, ts, ids, w) in enumerate(parts):
        k = len(rows)
        out.rows[i, -k:], out.ts[i, -k:], out.events[i, -k:], out.weights[i, -k:] = rows, ts, ids, w
        out.mask[i, -k:] = True
        out.weights[i, -k] = 0.0  # a window's oldest item has no context: never a target in it
    return out, skipped


# --------------------------------------------------------------------------- training


class Negatives(NamedTuple):
    """What :func:`sampled_loss` draws shared negatives from: ``count`` draws per step from ``proposal``."""

    proposal: torch.Tensor  # float64 (N,), sums to 1, > 0 everywhere
    count: int
    generator: torch.Generator


def proposal(windows: Windows, n_items: int) -> torch.Tensor:
    """Half uniform, half the training targets' frequency: popular items — the hard negatives of a
    popularity-shaped log — are drawn often, and every item can be drawn."""
    scored = windows.weights[:, 1:] > 0
    counts = np.bincount(windows.rows[:, 1:][scored], minlength=n_items).astype(np.float64)
    return torch.from_numpy(0.5 / n_items + 0.5 * counts / max(1.0, counts.sum()))


def batch_loss(
    model: UserEncoderModel,
    catalog: torch.Tensor,
    prior: torch.Tensor,
    windows: Windows,
    index: np.ndarray,
    temperature: float,
    negatives: Negatives | None = None,
) -> torch.Tensor:
    """Weighted softmax cross-entropy of every scored position of windows ``index``.

    Inputs are the first ``max_len`` items of each window, targets the last ``max_len``; position
    t's softmax masks the catalog rows of the window's items 0..t except its target. Over the whole
    catalog, or (``negatives``) over the target and shared sampled negatives (:func:`sampled_loss`).
    """
    rows = torch.from_numpy(windows.rows[index])
    ts = torch.from_numpy(windows.ts[index])
    mask = torch.from_numpy(windows.mask[index])
    weight = torch.from_numpy(windows.weights[index])[:, 1:] * mask[:, :-1] * mask[:, 1:]
    inputs = catalog[rows[:, :-1]] * mask[:, :-1, None]  # zeros at padding, as served
    states = model.hidden_states(inputs, ts[:, :-1], torch.from_numpy(windows.events[index])[:, :-1], mask[:, :-1])
    b, t = (weight > 0).nonzero(as_tuple=True)
    targets = rows[b, t + 1]
    before = (torch.arange(rows.shape[1] - 1).unsqueeze(0) <= t.unsqueeze(1)) & mask[b, :-1]  # (P, L)
    seen_at, seen_row = before.nonzero(as_tuple=True)
    seen_item = rows[b, :-1][seen_at, seen_row]  # items at or before t ...
    keep = seen_item != targets[seen_at]  # ... except the target itself
    pre = model.pre_head(states[b, t], ts[b, t], ts[b, t + 1])
    if negatives is None:
        logits = model.catalog_logits(pre, catalog, prior, temperature)
        logits.index_put_((seen_at[keep], seen_item[keep]), torch.tensor(float("-inf")))  # the mm output: safe in place
        losses = nn.functional.cross_entropy(logits, targets, reduction="none")
    else:
        history = (seen_at[keep], seen_item[keep])
        losses = sampled_loss(model, pre, catalog, prior, temperature, targets, history, negatives)
    w = weight[b, t]
    return (losses * w).sum() / w.sum().clamp(min=1e-12)


def sampled_loss(
    model: UserEncoderModel,
    pre: torch.Tensor,
    catalog: torch.Tensor,
    prior: torch.Tensor,
    temperature: float,
    targets: torch.Tensor,
    history: tuple[torch.Tensor, torch.Tensor],
    negatives: Negatives,
) -> torch.Tensor:
    """Per-position sampled softmax loss: the target against ``negatives.count`` shared draws.

    Draws are with replacement from ``q`` (:func:`proposal`); a drawn item ``j`` (``c_j`` times)
    enters with ``logit_j − log(m·q_j) + log c_j`` (the logQ correction, Bengio & Senécal 2008;
    Yi et al. 2019), the target, always present, with its own logit: the softmax's denominator
    is then an unbiased (importance-sampled) estimate of the whole catalog's, whatever ``q``, so
    popular items drawn often are not over-penalized. A draw equal to the position's target or in
    its history is dropped (as the full softmax masks history). A step costs positions × draws,
    not positions × catalog.
    """
    q, m = negatives.proposal, negatives.count
    drawn = torch.multinomial(q, m, replacement=True, generator=negatives.generator)
    items, counts = torch.unique(drawn, return_counts=True)
    left, right = model.logit_factors(pre, catalog[items], prior[items], temperature)
    _, target_right = model.logit_factors(pre, catalog[targets], prior[targets], temperature)
    log_mq = torch.log(m * q).to(left.dtype)
    positive = (left * target_right).sum(dim=1)
    sampled = left @ right.T + (torch.log(counts.to(left.dtype)) - log_mq[items])
    column = torch.full((len(q),), -1, dtype=torch.long)
    column[items] = torch.arange(len(items))
    hit_at, hit_item = torch.cat([torch.arange(len(targets)), history[0]]), torch.cat([targets, history[1]])
    hit = column[hit_item] >= 0
    sampled = sampled.index_put((hit_at[hit], column[hit_item[hit]]), torch.tensor(float("-inf")))
    logits = torch.cat([positive[:, None], sampled], dim=1)
    return nn.functional.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long), reduction="none")


def _schedule(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then linear decay to 0 (as ``aisle finetune``)."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def _fit(
    model: UserEncoderModel,
    catalog: torch.Tensor,
    prior: torch.Tensor,
    windows: Windows,
    config: UserEncoderConfig,
    progress: bool,
) -> list[float]:
    """Run the AdamW epochs; return each epoch's mean loss."""
    scored = np.flatnonzero(windows.weights[:, 1:].sum(axis=1) > 0)  # windows with ≥ 1 scored target
    steps_per_epoch = -(-len(scored) // config.batch_size)
    total = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _schedule(s, total, max(1, total // 20)))
    rng = np.random.default_rng(config.seed)
    negatives = (
        None
        if len(catalog) <= config.full_softmax_max
        else Negatives(proposal(windows, len(catalog)), config.negatives, torch.Generator().manual_seed(config.seed))
    )
    epoch_losses: list[float] = []
    model.train()
    bar = tqdm(total=total, desc="user encoder", unit="step", disable=not progress)
    for _ in range(config.epochs):
        order = rng.permutation(scored)
        losses = []
        for start in range(0, len(order), config.batch_size):
            loss = batch_loss(
                model, catalog, prior, windows, order[start : start + config.batch_size], config.temperature, negatives
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        epoch_losses.append(float(np.mean(losses)))
    bar.close()
    model.eval()
    return epoch_losses


def _check_inputs(
    item_ids: Sequence[str], item_embeddings: np.ndarray, config: UserEncoderConfig, popularity_prior: np.ndarray | None
) -> np.ndarray:
    """Validate the catalog side; return the prior as float32 (zeros when None)."""
    if item_embeddings.ndim != 2 or len(item_embeddings) != len(item_ids) or not len(item_ids):
        raise ValueError(f"item_embeddings {item_embeddings.shape} must be (len(item_ids)={len(item_ids)}, d)")
    if not np.isfinite(item_embeddings).all():
        raise ValueError("item_embeddings contain non-finite values")
    if config.max_len < 1 or config.epochs < 1 or config.batch_size < 1 or config.temperature <= 0:
        raise ValueError(f"invalid config {config}")
    if popularity_prior is None:
        return np.zeros(len(item_ids), np.float32)
    prior = np.asarray(popularity_prior, np.float32)
    if prior.shape != (len(item_ids),) or not np.isfinite(prior).all():
        raise ValueError(f"popularity_prior must be finite with shape ({len(item_ids)},), got {prior.shape}")
    return prior


def train_user_encoder(
    item_ids: Sequence[str],
    item_embeddings: np.ndarray,
    sequences: Mapping[str, tuple[Sequence[str], np.ndarray, Sequence[str]]],
    out_dir: Path,
    config: UserEncoderConfig = UserEncoderConfig(),
    popularity_prior: np.ndarray | None = None,
    weights: Mapping[str, np.ndarray] | None = None,
    item_tower_sha256: str | None = None,
    progress: bool = True,
) -> dict:
    """Train on ``sequences`` (user → (item ids, unix seconds, event types), oldest → newest), export.

    Writes ``out_dir/model.onnx`` and ``out_dir/config.json`` (what the server reads), plus the
    torch weights (``torch_model.pt``, see :func:`load_torch_model`), and returns the report (also
    in the config). Items missing from ``item_ids`` are skipped and counted. Raises :class:`ParityError`
    when the exported graph disagrees with the torch model (min cosine < 0.9999).
    """
    started = time.perf_counter()
    embeddings = np.ascontiguousarray(item_embeddings, dtype=np.float32)
    prior = _check_inputs(item_ids, embeddings, config, popularity_prior)
    previous_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:  # torch's thread count is process-wide: give it back to the caller afterwards
        model, vocabulary, windows, report = _train(item_ids, embeddings, prior, sequences, config, weights, progress)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "state_dict": model.state_dict(),
                "config": asdict(config),
                "dim": int(embeddings.shape[1]),
                "n_events": len(vocabulary),
            },
            out_dir / TORCH_FILE,
        )
        export_onnx(model, out_dir / MODEL_FILE)
        parity = check_parity(model, out_dir / MODEL_FILE, embeddings, windows, seed=config.seed)
    finally:
        torch.set_num_threads(previous_threads)
    report["parity"] = parity
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    write_config(out_dir, model, config, vocabulary, item_tower_sha256, report)
    if not parity["passed"]:
        raise ParityError(
            f"ONNX user encoder disagrees with torch: min cosine {parity['min_cosine']:.7f} < "
            f"{PARITY_THRESHOLD} over {parity['n']} sequences (figures in {out_dir / CONFIG_FILE})"
        )
    return report


def _train(
    item_ids: Sequence[str],
    embeddings: np.ndarray,
    prior: np.ndarray,
    sequences: Mapping[str, tuple[Sequence[str], np.ndarray, Sequence[str]]],
    config: UserEncoderConfig,
    weights: Mapping[str, np.ndarray] | None,
    progress: bool,
) -> tuple[UserEncoderModel, list[str], Windows, dict]:
    """Seed, build the windows, fit; return the eval-mode model, event vocabulary, windows and report."""
    started = time.perf_counter()
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    vocabulary = event_vocabulary(sequences)
    row_of = {str(item): row for row, item in enumerate(item_ids)}
    windows, skipped = make_windows(
        sequences, row_of, {e: i for i, e in enumerate(vocabulary)}, config.max_len, weights
    )
    if not (windows.weights[:, 1:] > 0).any():
        raise ValueError("no training targets: every user needs ≥ 2 known items with a new item among them")
    model = UserEncoderModel(embeddings.shape[1], len(vocabulary), config)
    losses = _fit(model, torch.from_numpy(embeddings), torch.from_numpy(prior), windows, config, progress)
    beta = float(model.beta.detach())
    report = {
        "config": asdict(config),
        "items": len(item_ids),
        "dim": int(embeddings.shape[1]),
        "users": len(sequences),
        "windows": len(windows.rows),
        "scored_targets": int((windows.weights[:, 1:] > 0).sum()),
        "skipped_unknown_items": int(skipped),
        "event_types": len(vocabulary) - 1,
        "softmax": (
            "full catalog"
            if len(item_ids) <= config.full_softmax_max
            else f"sampled: {config.negatives} draws per step, logQ-corrected"
        ),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "loss_first_epoch": losses[0],
        "loss_last_epoch": losses[-1],
        "epoch_losses": [round(x, 4) for x in losses],
        "beta": beta,
        "popularity_weight_equivalent": beta * config.temperature,
        "train_seconds": round(time.perf_counter() - started, 1),
        "torch_threads": torch.get_num_threads(),
    }
    return model, vocabulary, windows, report


def load_torch_model(directory: Path) -> UserEncoderModel:
    """The trained torch model saved by :func:`train_user_encoder`, in eval mode."""
    saved = torch.load(Path(directory) / TORCH_FILE, map_location="cpu", weights_only=True)
    model = UserEncoderModel(saved["dim"], saved["n_events"], UserEncoderConfig(**saved["config"]))
    model.load_state_dict(saved["state_dict"])
    return model.eval()


# --------------------------------------------------------------------------- export


def _dummy_inputs(dim: int, batch: int = 3, length: int = 7) -> tuple[torch.Tensor, ...]:
    """Left-padded example inputs with mixed lengths, so no "no padding" shortcut is traced."""
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([length, 1, length // 2])[:batch]
    mask = torch.arange(length).unsqueeze(0) >= (length - lengths).unsqueeze(1)
    items = torch.randn(batch, length, dim, generator=gen) * mask.unsqueeze(-1)
    ts = 1.7e9 + torch.cumsum(torch.rand(batch, length, generator=gen, dtype=torch.float64) * 1e5, 1) * mask
    return items, ts, torch.zeros(batch, length, dtype=torch.int64), mask.to(torch.int64), ts[:, -1] + 3600.0


def export_onnx(model: UserEncoderModel, path: Path) -> None:
    """Trace the eval-mode model (TorchScript exporter, opset 17, dynamic batch and sequence axes).

    ``dynamo=False`` for the reason given in ``onnx_export._trace_to_onnx`` (no onnxscript
    dependency); the parity check judges the trace.
    """
    model.eval()
    dim = model.out.out_features
    axes = {0: "batch", 1: "sequence"}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            model,
            _dummy_inputs(dim),
            buffer,
            dynamo=False,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes={**dict.fromkeys(INPUT_NAMES[:4], axes), "now": {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
        )
    graph = onnx.load_model_from_string(buffer.getvalue())
    graph.graph.output[0].type.tensor_type.shape.dim[1].dim_value = dim
    onnx.checker.check_model(graph, full_check=True)
    onnx.save(graph, path)


def ort_session(path: Path, intra_op_threads: int = 1) -> ort.InferenceSession:
    """An ONNX Runtime CPU session set up as the server's (``aisle_server.encoder.OnnxEncoder``)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def parity_sequences(
    windows: Windows, n_items: int, n_events: int, max_len: int, n: int, seed: int
) -> list[tuple[np.ndarray, ...]]:
    """``n`` held-out histories (rows, ts, events, now) with lengths spread over 1..max_len.

    Half are cut from the log (real gaps and event types); half are synthetic — random items,
    events and gaps from 0 s to a year, including exact bucket boundaries (60 s, 180 s) and
    out-of-order timestamps — so every bucket and clamp is exercised. ``now`` is 0 s–60 d after
    the newest item.
    """
    rng = np.random.default_rng(seed)
    lengths = rng.permutation(np.linspace(1, max_len, n).round().astype(int))
    available = windows.mask[:, :-1].sum(axis=1)
    out = []
    for i, length in enumerate(lengths.tolist()):
        if i % 2 == 0:
            w = rng.choice(np.flatnonzero(available >= min(length, available.max())))
            real = np.flatnonzero(windows.mask[w, :-1])[-length:]
            rows, ts, ids = windows.rows[w, real], windows.ts[w, real], windows.events[w, real]
        else:
            gaps = np.where(
                rng.random(length) < 0.2,
                rng.choice([0.0, 60.0, 180.0, -30.0], length),
                np.exp(rng.uniform(0, np.log(3.2e7), length)),
            )
            rows, ts = rng.integers(0, n_items, length), 1.7e9 + np.cumsum(gaps)
            ids = rng.integers(0, n_events, length)
        out.append((rows, ts, ids, float(ts[-1] + rng.uniform(0, 60 * 86400))))
    return out


def left_pad(
    histories: Sequence[np.ndarray], timestamps: Sequence[np.ndarray], events: Sequence[np.ndarray], dim: int
) -> dict[str, np.ndarray]:
    """Pack histories into the graph's left-padded inputs (zeros at padding), ``now`` excluded."""
    batch, width = len(histories), max(len(h) for h in histories)
    items = np.zeros((batch, width, dim), np.float32)
    ts = np.zeros((batch, width), np.float64)
    ids = np.zeros((batch, width), np.int64)
    mask = np.zeros((batch, width), np.int64)
    for i, (h, t, e) in enumerate(zip(histories, timestamps, events)):
        k = len(h)
        items[i, width - k :], ts[i, width - k :], ids[i, width - k :], mask[i, width - k :] = h, t, e, 1
    return {"item_embeddings": items, "timestamps": ts, "event_ids": ids, "mask": mask}


def check_parity(
    model: UserEncoderModel, path: Path, catalog: np.ndarray, windows: Windows, n: int = PARITY_SEQUENCES, seed: int = 0
) -> dict:
    """Cosine between torch (each sequence alone, unpadded) and ONNX Runtime (mixed-length padded batches)."""
    model.eval()
    sequences = parity_sequences(windows, len(catalog), model.event.num_embeddings, model.max_len, n, seed)
    reference = []
    with torch.no_grad():
        for rows, ts, ids, now in sequences:
            out = model(
                torch.from_numpy(catalog[rows][None]),
                torch.from_numpy(ts[None]),
                torch.from_numpy(ids[None]),
                torch.ones((1, len(rows)), dtype=torch.int64),
                torch.tensor([now], dtype=torch.float64),
            )
            reference.append(out[0].numpy())
    session = ort_session(path)
    candidate = []
    for start in range(0, n, PARITY_BATCH):
        chunk = sequences[start : start + PARITY_BATCH]
        feeds = left_pad(
            [catalog[r] for r, _, _, _ in chunk],
            [t for _, t, _, _ in chunk],
            [e for _, _, e, _ in chunk],
            catalog.shape[1],
        )
        feeds["now"] = np.array([now for *_, now in chunk], np.float64)
        candidate.append(session.run([OUTPUT_NAME], feeds)[0])
    ref, cand = np.asarray(reference, np.float64), np.concatenate(candidate).astype(np.float64)
    cosines = (ref * cand).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1))
    worst = int(np.argmin(cosines))
    return {
        "n": n,
        "batch": PARITY_BATCH,
        "min_cosine": float(cosines[worst]),
        "mean_cosine": float(cosines.mean()),
        "max_abs_diff": float(np.abs(ref - cand).max()),
        "worst_length": len(sequences[worst][0]),
        "threshold": PARITY_THRESHOLD,
        "passed": bool(cosines[worst] >= PARITY_THRESHOLD),
    }


def write_config(
    out_dir: Path,
    model: UserEncoderModel,
    config: UserEncoderConfig,
    vocabulary: list[str],
    item_tower_sha256: str | None,
    report: dict,
) -> None:
    """``config.json``: everything the server needs to feed the graph, plus the training figures."""
    document = {
        "format": FORMAT,
        "model_file": MODEL_FILE,
        "model_sha256": hashlib.sha256((out_dir / MODEL_FILE).read_bytes()).hexdigest(),
        "dim": model.out.out_features,
        "hidden": config.hidden,
        "heads": config.heads,
        "layers": config.layers,
        "max_len": config.max_len,
        "event_vocabulary": vocabulary,
        "gap_buckets": {"formula": BUCKET_FORMULA, "n": N_BUCKETS, "first_item_bucket": FIRST_BUCKET},
        "inputs": {
            "item_embeddings": "float32 [B, L, d] left-padded, zeros at padding",
            "timestamps": "float64 [B, L] unix seconds",
            "event_ids": "int64 [B, L], 0 = unknown",
            "mask": "int64 [B, L], 1 = real item",
            "now": "float64 [B] unix seconds",
        },
        "output": {OUTPUT_NAME: "float32 [B, d], L2-normalized"},
        "beta": report["beta"],
        "temperature": config.temperature,
        "popularity_weight_equivalent": report["popularity_weight_equivalent"],
        "item_tower_sha256": item_tower_sha256,
        "parity": report["parity"],
        "training": {k: v for k, v in report.items() if k != "parity"},
    }
    (Path(out_dir) / CONFIG_FILE).write_text(json.dumps(document, indent=2) + "\n")
