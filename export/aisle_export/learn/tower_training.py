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
the batch's own items).

Cost on a 2-core CPU is kept down by freezing the embeddings and the lower ``freeze_layers``
transformer layers: their output for every catalog text is computed once and cached, so a step
only runs the top layers, at the catalog's real token length. Each further trained layer adds its
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

import numpy as np
import torch
from tqdm import tqdm

from aisle_export.core.handoff import ITEM_TOWER, QUERY_TOWER, REPORT_FILE
from aisle_export.core.towers import default_tower_path, load_tower
from aisle_server.ranking import recency_weights


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
    seed: int = 0
    threads: int = 0  # torch threads; 0 = torch's default (all cores)


@dataclass(frozen=True)
class Example:
    window: tuple[int, ...]  # catalog rows, oldest → newest
    window_age_s: tuple[float, ...]  # target time − window item time
    target: int  # catalog row


def make_examples(histories: dict[str, list[tuple[str, float]]], row_of: dict[str, int], window: int) -> list[Example]:
    """Every (previous ``window`` items → next item) pair of each user's time-ordered history."""
    examples = []
    for events in histories.values():
        known = [(row_of[item], ts) for item, ts in events if item in row_of]
        for t in range(1, len(known)):
            context = known[max(0, t - window) : t]
            target, target_ts = known[t]
            examples.append(Example(tuple(r for r, _ in context), tuple(target_ts - ts for _, ts in context), target))
    return examples


class CachedTower(torch.nn.Module):
    """The item tower with its lower part precomputed for a fixed list of texts.

    ``forward(rows)`` returns the L2-normalized mean-pooled embeddings of ``texts[rows]``, running
    only the transformer layers from ``freeze_layers`` up (with gradients). With every layer
    trainable (``freeze_layers=0``) the cache holds the embedding layer's output.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        texts: Sequence[str],
        freeze_layers: int,
        max_length: int,
        batch_size: int = 128,
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
        encoded = tokenizer(list(texts), padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
        self.register_buffer("mask", encoded["attention_mask"], persistent=False)
        self.lengths = self.mask.sum(dim=1)
        hidden = []
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                ids = encoded["input_ids"][start : start + batch_size]
                mask = self.mask[start : start + batch_size]
                out = model(
                    input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids), output_hidden_states=True
                )
                hidden.append(out.hidden_states[freeze_layers])  # input of layer `freeze_layers`
        self.register_buffer("cache", torch.cat(hidden).clone(), persistent=False)

    def forward(self, rows: torch.Tensor, chunk: int = 96) -> torch.Tensor:
        """Embeddings of ``texts[rows]``; rows are run in chunks of similar token length (less padding)."""
        order = torch.argsort(self.lengths[rows], stable=True)
        parts = [self._encode(rows[order[start : start + chunk]]) for start in range(0, len(rows), chunk)]
        out = torch.empty((len(rows), parts[0].shape[1]), dtype=parts[0].dtype)
        return out.index_copy(0, order, torch.cat(parts))

    def _encode(self, rows: torch.Tensor) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        width = int(self.lengths[rows].max())
        hidden = self.cache[rows, :width]
        mask = self.mask[rows, :width]
        attention = create_bidirectional_mask(config=self.model.config, inputs_embeds=hidden, attention_mask=mask)
        for layer in self.trainable:
            out = layer(hidden, attention)
            hidden = out[0] if isinstance(out, tuple) else out
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=1)


def step_rows(
    batch: Sequence[Example], n_items: int, max_candidates: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The catalog rows one step encodes: its candidates, plus every window and target item.

    A catalog of at most ``max_candidates`` items is encoded whole, so the softmax runs over the
    full catalog exactly as the feed ranks it. A larger one is sampled uniformly (``max_candidates``
    rows) and joined with the batch's own items, which keeps a step's cost bounded.
    """
    if n_items <= max_candidates:
        return torch.arange(n_items)
    own = {r for ex in batch for r in ex.window} | {ex.target for ex in batch}
    sample = torch.randperm(n_items, generator=generator)[:max_candidates].tolist()
    return torch.tensor(sorted(own | set(sample)), dtype=torch.long)


def batch_loss(
    tower: CachedTower, batch: Sequence[Example], rows: torch.Tensor, temperature: float, half_life_s: float
) -> torch.Tensor:
    """Softmax cross-entropy of each example's next item among ``rows`` (see :func:`step_rows`).

    The interest is the recency-weighted mean of the window's embeddings, normalized, as
    ``aisle_server.ranking`` computes it; the example's own window items are masked out of its
    softmax (the feed never recommends history back) unless one of them is the target itself.
    """
    embeddings = tower(rows)
    position = {int(r): i for i, r in enumerate(rows.tolist())}
    width = max(len(ex.window) for ex in batch)
    index = torch.zeros((len(batch), width), dtype=torch.long)
    weights = torch.zeros((len(batch), width), dtype=embeddings.dtype)
    masked = torch.zeros((len(batch), len(rows)), dtype=torch.bool)
    for b, ex in enumerate(batch):
        columns = torch.tensor([position[r] for r in ex.window])
        index[b, : len(ex.window)] = columns
        weights[b, : len(ex.window)] = torch.from_numpy(recency_weights(ex.window_age_s, half_life_s))
        masked[b, columns] = True
    targets = torch.tensor([position[ex.target] for ex in batch])
    masked[torch.arange(len(batch)), targets] = False
    interest = (weights.unsqueeze(-1) * embeddings[index]).sum(dim=1)
    interest = torch.nn.functional.normalize(interest, p=2.0, dim=1)
    logits = (interest @ embeddings.T / temperature).masked_fill(masked, float("-inf"))
    return torch.nn.functional.cross_entropy(logits, targets)


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
) -> dict:
    """Fine-tune ``base`` (default all-MiniLM-L6-v2) and save both towers under ``out_dir``."""
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
    tower = CachedTower(model, tokenizer, texts, config.freeze_layers, config.max_length)
    cache_s = time.perf_counter() - started

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
        batch = [examples[i] for i in order[: config.batch_size]]
        del order[: config.batch_size]
        rows = step_rows(batch, len(texts), config.max_candidates, generator)
        loss = batch_loss(tower, batch, rows, config.temperature, config.recency_half_life_s)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
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
    report = {
        "base": str(base_path),
        "config": asdict(config),
        "examples": len(examples),
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
