"""``aisle finetune``: train the item tower on "recent history → next item" over the whole catalog.

What is trained is exactly what the feed serves (``aisle_server.ranking``): the interest is the
recency-weighted mean of the item-tower embeddings of a user's recent items, and candidates are
scored by their dot product with it. So each example is (the ``window`` items a user interacted
with before an interaction, their times) → that interaction's item, and the loss is the softmax
cross-entropy of that item among *every catalog item* (temperature ``temperature``), the user's
window items masked out (the feed never recommends history back).

Why the full catalog and not in-batch negatives: the evaluation (and the feed) ranks the full
catalog, and in-batch negatives are drawn in proportion to popularity, which teaches the towers
to push popular items *down* — on MovieLens-100K that left the fine-tuned towers no better than
the pretrained ones on the held-out split (figures: docs/results.md, "Content ranking study").
Encoding the whole catalog every step is affordable because the cost is per distinct item, not per
example: one step encodes the 1,682 MovieLens items once and scores a batch of 1,024 examples
against them. Catalogs above ``max_candidates`` items are sampled uniformly per step instead (plus
the batch's own items), each sampled logit corrected by its inclusion probability (logQ, see
:func:`step_rows`): a step's cost is then bounded by the batch, whatever the catalog's size.

Cost on a 2-core CPU is kept down by freezing the embeddings and the lower ``freeze_layers``
transformer layers: their output for every catalog text is computed once and cached, so a step
only runs the top layers, at the texts' own token lengths (the cache is packed, see
:class:`CachedTower`). Each further trained layer adds its
forward and backward pass to every step, and on the validation split training more than the top
one did not pay for itself (figures: docs/results.md, "Content ranking study").

Only interactions before the split's cutoff are used (``aisle_export.data.splits``), so a model trained
with the defaults can be evaluated on the held-out period.

The query tower must stay in the item tower's space (search embeds the query with it and scores
items by cosine), so the one fine-tuned encoder is saved twice: ``<out>/query_tower`` and
``<out>/item_tower``, both sentence-transformers directories (transformer → mean pooling →
normalize, ``tokenizer.json`` included) that ``aisle export --query-tower/--item-tower`` takes.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from aisle_export.core.handoff import ITEM_TOWER, QUERY_TOWER, REPORT_FILE
from aisle_export.core.memory import release_memory
from aisle_export.core.towers import default_tower_path, load_tower
from aisle_server.ranking import decay


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 60  # ≈ 0.8 epoch of ML-100K's training pairs; more did not help (docs/results.md)
    batch_size: int = 1024  # examples per step (cheap: the catalog is encoded once per step)
    window: int = 50  # history items per example (the most recent before the target)
    freeze_layers: int = 5  # embeddings + this many lower transformer layers stay fixed (cached)
    max_candidates: int = 4096  # whole catalog up to this size, else a uniform sample per step
    lr: float = 5e-4
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    temperature: float = 0.05
    recency_half_life_s: float = 7 * 24 * 3600.0  # as the served default: weights of the window items
    max_length: int = 64  # token cap for item texts (MovieLens texts are ≤ 31 tokens)
    cache_budget_mb: float = 1024.0  # a larger frozen-layer cache is kept in float16 (CachedTower)
    seed: int = 0
    threads: int = 0  # torch threads; 0 = torch's default (all cores)


@dataclass(frozen=True)
class Example:
    """One example as plain values (tests and small callers); training reads :class:`Examples`."""

    window: tuple[int, ...]  # catalog rows, oldest → newest
    window_age_s: tuple[float, ...]  # target time − window item time
    target: int  # catalog row


@dataclass(frozen=True)
class Examples:
    """Every (previous ``window`` items → next item) pair, as positions in one flat array of the
    users' known items (users one after another, each oldest → newest).

    An example is two integers, not a tuple of ``window`` items: memory grows with the events, not
    with events × window (on a million events the tuples alone took gigabytes).
    """

    rows: np.ndarray  # int64 catalog row of each known event
    ts: np.ndarray  # float64 unix seconds
    target: np.ndarray  # int64 position in ``rows`` of each example's target
    start: np.ndarray  # int64 position of its window's oldest item (the window is rows[start:target])

    def __len__(self) -> int:
        return len(self.target)

    def __getitem__(self, i: int) -> Example:
        start, target = int(self.start[i]), int(self.target[i])
        age = self.ts[target] - self.ts[start:target]
        return Example(tuple(self.rows[start:target].tolist()), tuple(age.tolist()), int(self.rows[target]))

    def batch(self, index: np.ndarray) -> Batch:
        """The examples ``index`` as padded arrays (windows left-aligned, padding at the end)."""
        start, target = self.start[index], self.target[index]
        width = int((target - start).max())
        position = start[:, None] + np.arange(width)
        real = position < target[:, None]
        position = np.where(real, position, target[:, None])  # any valid index; masked below
        age = np.where(real, self.ts[target][:, None] - self.ts[position], 0.0)
        return Batch(np.where(real, self.rows[position], -1), age, real, self.rows[target])


@dataclass(frozen=True)
class Batch:
    """Examples as arrays of shape (B, width): window rows (-1 at padding), their ages, which are real."""

    window: np.ndarray  # int64
    age_s: np.ndarray  # float64
    real: np.ndarray  # bool
    target: np.ndarray  # int64 (B,)

    @classmethod
    def of(cls, examples: Sequence[Example]) -> Batch:
        width = max(len(ex.window) for ex in examples)
        window = np.full((len(examples), width), -1, np.int64)
        age = np.zeros((len(examples), width))
        for b, ex in enumerate(examples):
            window[b, : len(ex.window)], age[b, : len(ex.window)] = ex.window, ex.window_age_s
        return cls(window, age, window >= 0, np.array([ex.target for ex in examples], np.int64))

    def __len__(self) -> int:
        return len(self.target)


def make_examples(histories: dict[str, list[tuple[str, float]]], row_of: dict[str, int], window: int) -> Examples:
    """Every (previous ``window`` items → next item) pair of each user's time-ordered history."""
    rows: list[np.ndarray] = []
    times: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    offset = 0
    for events in histories.values():
        known = [(row_of[item], ts) for item, ts in events if item in row_of]
        rows.append(np.array([r for r, _ in known], np.int64))
        times.append(np.array([t for _, t in known], np.float64))
        targets.append(offset + np.arange(1, len(known), dtype=np.int64))
        offset += len(known)
    flat_rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    flat_ts = np.concatenate(times) if times else np.zeros(0)
    target = np.concatenate(targets) if targets else np.zeros(0, np.int64)
    first = np.repeat(np.cumsum([0] + [len(r) for r in rows[:-1]]), [max(0, len(r) - 1) for r in rows])
    return Examples(flat_rows, flat_ts, target, np.maximum(first, target - window).astype(np.int64))


#: The padded tokens one chunk of :meth:`CachedTower.embed_all` encodes: at 8,192, a layer's
#: feed-forward activations are ~50 MB whatever the texts' lengths (rows × longest text is bounded).
EMBED_TOKENS = 8192


def token_chunks(lengths: torch.Tensor, max_tokens: int) -> list[torch.Tensor]:
    """The positions of ``lengths``, shortest first, in chunks whose padded size (rows × the chunk's
    longest length) is at most ``max_tokens``; a text longer than that is a chunk of its own."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens={max_tokens} must be at least 1")
    order = torch.argsort(lengths, stable=True)
    ordered = lengths[order].clamp(min=1).tolist()
    chunks, start = [], 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end + 1 - start) * ordered[end] <= max_tokens:
            end += 1
        chunks.append(order[start:end])
        start = end
    return chunks


class CachedTower(torch.nn.Module):
    """The item tower with its lower part precomputed for a fixed list of texts.

    ``forward(rows)`` returns the L2-normalized mean-pooled embeddings of ``texts[rows]``, running
    only the transformer layers from ``freeze_layers`` up (with gradients). With every layer
    trainable (``freeze_layers=0``) the cache holds the embedding layer's output.

    The cache is packed: each text keeps its own tokens' states, no padding (a padded cache is as
    long as the catalog's longest text for every item). A cache above ``budget_mb`` in float32 is
    kept in float16 (half the memory; the states carry ~3 significant digits, ample for training:
    a 100,000-item catalog of short texts needs ~1.4 GB instead of ~5.6 GB padded).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        texts: Sequence[str],
        freeze_layers: int,
        max_length: int,
        batch_size: int = 128,
        budget_mb: float = 1024.0,
        progress: bool = False,
    ):
        super().__init__()
        self.model = model
        layers = model.encoder.layer
        if not 0 <= freeze_layers <= len(layers):
            raise ValueError(f"freeze_layers={freeze_layers} must be in [0, {len(layers)}]")
        self.freeze_layers = freeze_layers
        self.trainable = layers[freeze_layers:]
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        for parameter in self.trainable.parameters():
            parameter.requires_grad_(True)
        ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
        self.lengths = torch.tensor([len(i) for i in ids], dtype=torch.long)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(self.lengths, 0)])
        dim = model.config.hidden_size
        full_mb = int(self.offsets[-1]) * dim * 4 / 2**20
        self.cache_dtype = torch.float32 if full_mb <= budget_mb else torch.float16
        self.cache = torch.empty((int(self.offsets[-1]), dim), dtype=self.cache_dtype)
        self.truncated = int((self.lengths >= max_length).sum())  # texts that may have lost tokens
        model.eval()
        order = torch.argsort(self.lengths, stable=True)  # similar lengths share a batch: little padding
        pad = tokenizer.pad_token_id or 0
        with torch.inference_mode():
            for start in tqdm(
                range(0, len(texts), batch_size), desc="caching frozen layers", unit="batch", disable=not progress
            ):
                rows = order[start : start + batch_size]
                width = int(self.lengths[rows].max())
                batch = torch.full((len(rows), width), pad, dtype=torch.long)
                for b, r in enumerate(rows.tolist()):
                    batch[b, : len(ids[r])] = torch.tensor(ids[r])
                mask = (torch.arange(width) < self.lengths[rows, None]).long()
                states = self._lower(batch, mask)
                real = mask.bool()
                positions = (self.offsets[rows, None] + torch.arange(width))[real]
                self.cache[positions] = states[real].to(self.cache_dtype)

    def _lower(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The input of layer ``freeze_layers``: embeddings and the frozen layers only."""
        from transformers.masking_utils import create_bidirectional_mask

        hidden = self.model.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids))
        attention = create_bidirectional_mask(config=self.model.config, inputs_embeds=hidden, attention_mask=mask)
        for layer in self.model.encoder.layer[: self.freeze_layers]:
            out = layer(hidden, attention)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def embed_all(self, max_tokens: int = EMBED_TOKENS) -> np.ndarray:
        """Every text's embedding from the cache, as the tower now stands (float32, L2-normalized).

        Only the trainable layers run: the catalog's embeddings for the trained *and* the pretrained
        top layers cost a fraction of encoding the catalog twice more from its tokens. Texts run in
        chunks of similar length holding at most ``max_tokens`` padded tokens (:func:`token_chunks`),
        so a chunk's activations stay the same size however long the catalog's longest texts are,
        and each chunk is written into one output array.
        """
        self.eval()
        out: torch.Tensor | None = None
        with torch.inference_mode():
            for rows in token_chunks(self.lengths, max_tokens):
                part = self._encode(rows)
                if out is None:
                    out = torch.empty((len(self.lengths), part.shape[1]), dtype=part.dtype)
                out[rows] = part
        assert out is not None, "a tower over no texts"
        return out.numpy()

    @property
    def cache_mb(self) -> float:
        return self.cache.numel() * self.cache.element_size() / 2**20

    def forward(self, rows: torch.Tensor, chunk: int = 96) -> torch.Tensor:
        """Embeddings of ``texts[rows]``; rows are run in chunks of similar token length (less padding)."""
        order = torch.argsort(self.lengths[rows], stable=True)
        parts = [self._encode(rows[order[start : start + chunk]]) for start in range(0, len(rows), chunk)]
        out = torch.empty((len(rows), parts[0].shape[1]), dtype=parts[0].dtype)
        return out.index_copy(0, order, torch.cat(parts))

    def _encode(self, rows: torch.Tensor) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        lengths = self.lengths[rows]
        width = int(lengths.max())
        real = torch.arange(width) < lengths[:, None]
        position = torch.where(real, self.offsets[rows, None] + torch.arange(width), 0)
        hidden = self.cache[position].to(torch.float32) * real.unsqueeze(-1)
        mask = real.long()
        attention = create_bidirectional_mask(config=self.model.config, inputs_embeds=hidden, attention_mask=mask)
        for layer in self.trainable:
            out = layer(hidden, attention)
            hidden = out[0] if isinstance(out, tuple) else out
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=1)


class StepRows(NamedTuple):
    """The catalog rows one step encodes and each row's log inclusion probability (the logQ term)."""

    rows: torch.Tensor  # int64, sorted, distinct
    log_q: torch.Tensor  # float32: 0 for rows the step always includes, log(m / N) for sampled ones


def step_rows(batch: Batch, n_items: int, max_candidates: int, generator: torch.Generator | None = None) -> StepRows:
    """The catalog rows one step encodes: its candidates, plus every window and target item.

    A catalog of at most ``max_candidates`` items is encoded whole, so the softmax runs over the
    full catalog exactly as the feed ranks it. A larger one is sampled uniformly (``max_candidates``
    rows, without replacement) and joined with the batch's own items, which keeps a step's cost
    bounded by the batch, not the catalog. The batch's own items are in every such softmax, a
    sampled item only with probability ``m / N``: left uncorrected, the sample stands for too
    little of the catalog and the batch's (popular) items for too much — the bias that teaches
    towers to push popular items down. So each sampled row carries ``log q = log(m / N)``, which
    :func:`batch_loss` subtracts from its logit: the softmax's denominator is then an unbiased
    (Horvitz–Thompson) estimate of the whole catalog's.
    """
    if n_items <= max_candidates:
        return StepRows(torch.arange(n_items), torch.zeros(n_items))
    own = np.unique(np.concatenate([batch.window[batch.real], batch.target]))
    sample = torch.randperm(n_items, generator=generator)[:max_candidates].numpy()
    rows = np.union1d(own, sample)
    log_q = np.where(np.isin(rows, own), 0.0, np.log(max_candidates / n_items))
    return StepRows(torch.from_numpy(rows), torch.from_numpy(log_q).float())


def batch_loss(
    tower: CachedTower,
    batch: Batch | Sequence[Example],
    rows: StepRows | torch.Tensor,
    temperature: float,
    half_life_s: float,
) -> torch.Tensor:
    """Softmax cross-entropy of each example's next item among ``rows`` (see :func:`step_rows`).

    The interest is the recency-weighted mean of the window's embeddings, normalized, as
    ``aisle_server.ranking`` computes it; the example's own window items are masked out of its
    softmax (the feed never recommends history back) unless one of them is the target itself.
    Sampled rows' logits are corrected by their ``log q`` (0 when the whole catalog is encoded).
    """
    if not isinstance(batch, Batch):
        batch = Batch.of(batch)
    if not isinstance(rows, StepRows):
        rows = StepRows(rows, torch.zeros(len(rows)))
    return loss_of(tower(rows.rows), batch, rows, temperature, half_life_s)


def loss_of(
    embeddings: torch.Tensor, batch: Batch, rows: StepRows, temperature: float, half_life_s: float
) -> torch.Tensor:
    """:func:`batch_loss` given the embeddings of ``rows.rows``."""
    column = np.searchsorted(rows.rows.numpy(), np.where(batch.real, batch.window, 0))
    targets = torch.from_numpy(np.searchsorted(rows.rows.numpy(), batch.target))
    decayed = np.where(batch.real, decay(batch.age_s, half_life_s), 0.0)
    totals = decayed.sum(axis=1, keepdims=True)
    weights = np.where(
        totals > 0, decayed / np.where(totals > 0, totals, 1.0), batch.real / batch.real.sum(1, keepdims=True)
    )
    index = torch.from_numpy(column)
    interest = (torch.from_numpy(weights).to(embeddings.dtype).unsqueeze(-1) * embeddings[index]).sum(dim=1)
    interest = torch.nn.functional.normalize(interest, p=2.0, dim=1)
    logits = interest @ embeddings.T / temperature - rows.log_q
    b, w = np.nonzero(batch.real)
    masked = torch.zeros(logits.shape, dtype=torch.bool)
    masked[torch.from_numpy(b), index[b, w]] = True
    masked[torch.arange(len(batch)), targets] = False
    return torch.nn.functional.cross_entropy(logits.masked_fill(masked, float("-inf")), targets)


def backward_in_chunks(
    tower: CachedTower, batch: Batch, rows: StepRows, temperature: float, half_life_s: float, chunk: int = 512
) -> torch.Tensor:
    """:func:`batch_loss` and its gradients, with the activations of only ``chunk`` rows held at once.

    A step encodes the batch's own items too — up to batch × window rows (tens of thousands over
    a large catalog) — and backpropagating through all of them at once held every row's layer
    activations: gigabytes. So (as GradCache, Gao et al. 2021) the rows are first encoded without
    gradients, the loss's gradient with respect to those embeddings is taken, and each chunk is
    then encoded again with gradients and given its part: the same gradients (each chunk replays
    its dropout draws), one extra forward pass of the trainable layers. Returns the loss (detached).
    """
    states, parts = [], []
    with torch.no_grad():
        for start in range(0, len(rows.rows), chunk):
            states.append(torch.get_rng_state())
            parts.append(tower(rows.rows[start : start + chunk]))
    embeddings = torch.cat(parts).requires_grad_(True)
    loss = loss_of(embeddings, batch, rows, temperature, half_life_s)
    loss.backward()
    assert embeddings.grad is not None
    resume = torch.get_rng_state()
    for i, start in enumerate(range(0, len(rows.rows), chunk)):
        torch.set_rng_state(states[i])
        tower(rows.rows[start : start + chunk]).backward(embeddings.grad[start : start + chunk])
    torch.set_rng_state(resume)
    return loss.detach()


def _legacy_pooling_config(saved: Path, base_path: Path) -> None:
    """Keep the base tower's pooling config file (mean pooling, legacy ``pooling_mode_*`` keys).

    sentence-transformers ≥ 6 saves ``{"pooling_mode": "mean"}``, which ``towers.load_tower`` (the
    check before ``aisle export``) does not read; the legacy keys are read by every version.
    Pooling has no weights, so the copied config describes the saved model exactly.
    """
    modules = json.loads((saved / "modules.json").read_text())
    base_modules = json.loads((Path(base_path) / "modules.json").read_text())
    pooling = [m["path"] for m in modules if m["type"].endswith("Pooling")]
    base_pooling = [m["path"] for m in base_modules if m["type"].endswith("Pooling")]
    if len(pooling) != 1 or len(base_pooling) != 1:
        return
    config = json.loads((Path(base_path) / base_pooling[0] / "config.json").read_text())
    saved_config = json.loads((saved / pooling[0] / "config.json").read_text())
    if saved_config.get("pooling_mode", "mean") != "mean" or not config.get("pooling_mode_mean_tokens"):
        return  # not the mean-pooling tower this module trains; leave it for load_tower to judge
    (saved / pooling[0] / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def _schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def finetune(
    texts: Sequence[str],
    item_ids: Sequence[str],
    histories: dict[str, list[tuple[str, float]]],
    out_dir: Path,
    config: FinetuneConfig = FinetuneConfig(),
    base: str | Path | None = None,
    progress: bool = True,
    extra_report: dict | None = None,
    embeddings: dict[str, np.ndarray] | None = None,
) -> dict:
    """Fine-tune ``base`` (default all-MiniLM-L6-v2) and save both towers under ``out_dir``.

    ``embeddings``: a dict to receive the catalog's embeddings by the ``"trained"`` and the
    ``"pretrained"`` tower, computed from the cache (:meth:`CachedTower.embed_all`); left empty
    when a text reached ``max_length`` tokens (the cache would then differ from the tower).
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Transformer

    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    base_path = load_tower(base).path if base is not None else default_tower_path()
    st = SentenceTransformer(str(base_path), device="cpu")
    modules = list(st)
    if not modules or not isinstance(modules[0], Transformer):
        raise ValueError(f"{base_path}: the first sentence-transformers module must be a Transformer")
    model = modules[0].auto_model
    tokenizer = modules[0].tokenizer

    row_of = {item: row for row, item in enumerate(item_ids)}
    examples = make_examples(histories, row_of, config.window)
    if len(examples) < 2:
        raise ValueError(f"need at least 2 training examples, got {len(examples)}")
    tower = CachedTower(
        model,
        tokenizer,
        texts,
        config.freeze_layers,
        config.max_length,
        budget_mb=config.cache_budget_mb,
        progress=progress,
    )
    cache_s = time.perf_counter() - started

    initial = {name: value.clone() for name, value in tower.trainable.state_dict().items()}
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(1, int(config.warmup_fraction * config.steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _schedule(s, config.steps, warmup))
    order: list[int] = []
    losses: list[float] = []
    tower.trainable.train()
    bar = tqdm(range(config.steps), desc="fine-tuning", unit="step", disable=not progress)
    for _step in bar:
        if len(order) < config.batch_size:
            fresh = list(range(len(examples)))
            random.shuffle(fresh)
            order += fresh
        batch = examples.batch(np.array(order[: config.batch_size], np.int64))
        del order[: config.batch_size]
        rows = step_rows(batch, len(texts), config.max_candidates, generator)
        optimizer.zero_grad(set_to_none=True)
        loss = backward_in_chunks(tower, batch, rows, config.temperature, config.recency_half_life_s)
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    bar.close()
    model.eval()
    train_s = time.perf_counter() - started - cache_s

    out_dir = Path(out_dir)
    for name in (QUERY_TOWER, ITEM_TOWER):
        st.save(str(out_dir / name))
        _legacy_pooling_config(out_dir / name, base_path)
    if embeddings is not None and not tower.truncated:
        del optimizer, scheduler  # the training's state and its freed activations go before the catalog's embeddings
        release_memory()
        embeddings["trained"] = tower.embed_all()
        tower.trainable.load_state_dict(initial)
        embeddings["pretrained"] = tower.embed_all()
    report = {
        "base": str(base_path),
        "config": asdict(config),
        "examples": len(examples),
        "cache_mb": round(tower.cache_mb, 1),
        "cache_dtype": str(tower.cache_dtype).removeprefix("torch."),
        "epochs": round(config.steps * config.batch_size / len(examples), 3),
        "trainable_parameters": int(sum(p.numel() for p in parameters)),
        "total_parameters": int(sum(p.numel() for p in model.parameters())),
        "loss_first_20": float(np.mean(losses[:20])),
        "loss_last_20": float(np.mean(losses[-20:])),
        "losses": [round(x, 4) for x in losses],
        "cache_seconds": round(cache_s, 1),
        "train_seconds": round(train_s, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "torch_threads": torch.get_num_threads(),
        **(extra_report or {}),
    }
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report
