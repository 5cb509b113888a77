"""Training loops of ``aisle distill`` (torch): fit a student to the teacher's sentence vectors.

Both students see the same batches of the served tokenizer's output and the same loss:
``1 − cos(student, teacher)`` on each text, plus (``kl_weight``) a listwise KL divergence between
the teacher's and the student's softmax over a sample of the teacher's catalog vectors, so what
the student ranks first against the teacher's index is what the teacher ranks first.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from aisle_export.build.onnx_export import PooledEncoder
from aisle_export.core.spaces import WEIGHT_FILES
from aisle_server.encoder import OnnxEncoder
from aisle_server.tokenization import TextTokenizer


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation knobs of one distillation run (defaults: a few minutes on 2 CPU cores)."""

    steps: int = 600
    batch_size: int = 64
    lr: float = 1e-4
    kl_weight: float = 1.0  # listwise term; 0 = cosine alone
    temperature: float = 0.05  # of the listwise softmax (the towers' cosines live in [-1, 1])
    items_per_step: int = 2048  # catalog vectors the listwise term ranks against
    seed: int = 0
    layers: int = 2  # layers student: transformer layers kept of the teacher's (evenly spread, last one kept)


#: per student: the layers student fine-tunes a pretrained transformer (small steps); the static
#: table starts from per-token vectors and moves a long way (large steps, cheap ones)
DEFAULTS = {
    "layers": TrainConfig(steps=1500, batch_size=32, lr=3e-4),
    "static": TrainConfig(steps=2000, batch_size=128, lr=3e-3),
}

Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def listwise_kl(student: torch.Tensor, teacher: torch.Tensor, items: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher ‖ student) of the softmax over ``items`` of each query, averaged over queries."""
    target = torch.log_softmax(teacher @ items.T / temperature, dim=1)
    guess = torch.log_softmax(student @ items.T / temperature, dim=1)
    return torch.nn.functional.kl_div(guess, target, log_target=True, reduction="batchmean")


def fit(
    forward: Forward,
    optimizer: torch.optim.Optimizer,
    tokenizer: TextTokenizer,
    texts: Sequence[str],
    targets: np.ndarray,
    items: np.ndarray,
    config: TrainConfig,
    desc: str,
) -> dict:
    """Step ``optimizer`` so ``forward(tokens)`` matches ``targets``; the loss curve's ends and the time."""
    rng = np.random.default_rng(config.seed)
    item_bank = torch.from_numpy(np.ascontiguousarray(items, dtype=np.float32))
    losses: list[float] = []
    # cosine decay to zero: large early steps, then settling in (no warmup: the students start close)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps)
    started = time.perf_counter()
    with tqdm(range(config.steps), desc=desc, unit="step") as bar:
        for _ in bar:
            rows = rng.choice(len(texts), size=min(config.batch_size, len(texts)), replace=False)
            ids, mask = tokenizer([texts[r] for r in rows])
            student = forward(torch.from_numpy(ids), torch.from_numpy(mask))
            teacher = torch.from_numpy(targets[rows])
            loss = (1.0 - (student * teacher).sum(dim=1)).mean()
            if config.kl_weight > 0 and len(item_bank):
                sample = torch.from_numpy(rng.choice(len(item_bank), min(config.items_per_step, len(item_bank))))
                loss = loss + config.kl_weight * listwise_kl(student, teacher, item_bank[sample], config.temperature)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    return {
        **asdict(config),
        "texts": len(texts),
        "loss_first_20": float(np.mean(losses[:20])),
        "loss_last_20": float(np.mean(losses[-20:])),
        "seconds": round(time.perf_counter() - started, 1),
    }


def keep_layers(model: torch.nn.Module, count: int) -> list[int]:
    """Keep ``count`` evenly spread transformer layers of a BERT-family ``model`` in place; their indices.

    The first and the last layer are always kept (2 of 6 → 0, 5; 3 of 6 → 0, 2, 5): the first sits on
    the token table, the last writes the space the teacher's index lives in.
    """
    layers = model.encoder.layer
    if not 1 <= count <= len(layers):
        raise ValueError(f"layers: keep 1 … {len(layers)} of the teacher's {len(layers)} layers, not {count}")
    keep = sorted({round(i * (len(layers) - 1) / max(count - 1, 1)) for i in range(count)})
    model.encoder.layer = torch.nn.ModuleList(layers[i] for i in keep)
    model.config.num_hidden_layers = len(keep)
    return keep


def save_layers_student(model: torch.nn.Module, teacher_dir: Path, out: Path) -> None:
    """A sentence-transformers directory: the teacher's pipeline files with the student's weights."""
    out.mkdir(parents=True, exist_ok=True)
    for path in Path(teacher_dir).iterdir():
        if path.name in (*WEIGHT_FILES, "config.json", "README.md") or path.name.startswith("."):
            continue
        if path.is_dir():
            shutil.copytree(path, out / path.name, dirs_exist_ok=True)
        else:
            shutil.copyfile(path, out / path.name)
    model.save_pretrained(out)


def train_layers(
    teacher_dir: Path,
    out: Path,
    tokenizer: TextTokenizer,
    texts: Sequence[str],
    targets: np.ndarray,
    items: np.ndarray,
    config: TrainConfig,
) -> dict:
    """``config.layers`` of the teacher's layers, fine-tuned to its vectors, saved as a sentence-transformers dir."""
    from transformers import AutoModel

    torch.manual_seed(config.seed)
    model = AutoModel.from_pretrained(teacher_dir, attn_implementation="eager")
    kept = keep_layers(model, config.layers)
    encoder = PooledEncoder(model).eval()  # eval: no dropout; the targets are deterministic vectors
    # the token table stays the teacher's (2/3 of the weights; most of an AdamW step's cost on CPU)
    model.embeddings.word_embeddings.weight.requires_grad_(False)
    trained = [p for p in encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=config.lr, weight_decay=0.0)
    report = fit(encoder, optimizer, tokenizer, texts, targets, items, config, "distill layers")
    save_layers_student(model.eval(), teacher_dir, out)
    return report | {"kept_layers": kept}


def token_table(teacher_onnx: Path, tokenizer: TextTokenizer, vocab_size: int, batch: int = 1024) -> np.ndarray:
    """Initial static table: the teacher's vector of each token alone (``[CLS] token [SEP]``), as model2vec does.

    Unlike model2vec's table this one keeps the teacher's width and basis (no PCA): it must stay
    in the teacher's space, where the index lives.
    """
    empty_ids, _ = tokenizer([""])
    cls_id, sep_id = int(empty_ids[0, 0]), int(empty_ids[0, 1])
    encoder = OnnxEncoder(teacher_onnx / "model.onnx")
    table = np.zeros((vocab_size, encoder.dim), dtype=np.float32)
    for start in tqdm(range(0, vocab_size, batch), desc="token table from the teacher", unit="batch"):
        ids = np.arange(start, min(start + batch, vocab_size), dtype=np.int64)
        tokens = np.stack([np.full_like(ids, cls_id), ids, np.full_like(ids, sep_id)], axis=1)
        table[ids] = encoder(tokens, np.ones_like(tokens))
    return table


class StaticEncoder(torch.nn.Module):
    """The static student in torch: the same function as :func:`aisle_export.build.static_student.static_graph`."""

    def __init__(self, table: np.ndarray):
        super().__init__()
        # sparse: a step touches the rows of its batch's tokens only, not the whole 30k x 384 table
        weights = torch.from_numpy(np.array(table, dtype=np.float32))
        self.table = torch.nn.Embedding.from_pretrained(weights, freeze=False, sparse=True)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        weights = attention_mask.unsqueeze(-1).to(torch.float32)
        pooled = (self.table(input_ids) * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=1)


def train_static(
    table: np.ndarray,
    tokenizer: TextTokenizer,
    texts: Sequence[str],
    targets: np.ndarray,
    items: np.ndarray,
    config: TrainConfig,
) -> tuple[np.ndarray, dict]:
    """Fit the token table to the teacher's sentence vectors; the trained table and the report."""
    encoder = StaticEncoder(table)
    optimizer = torch.optim.SparseAdam(list(encoder.parameters()), lr=config.lr)
    report = fit(encoder, optimizer, tokenizer, texts, targets, items, config, "distill static")
    return encoder.table.weight.detach().numpy().copy(), report
