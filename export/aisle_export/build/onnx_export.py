"""Export a text tower to a single ONNX graph and prove it matches sentence-transformers.

The exported graph is the whole embedding function — transformer → attention-mask-weighted mean
pooling → L2 normalisation — so Triton serves ``(input_ids, attention_mask) → embedding`` with no
Python in the hot path. Parity is checked against ``SentenceTransformer.encode`` fed through the
*server's* tokenizer (:class:`aisle_server.tokenization.TextTokenizer`, which pads to multiples of
16), which proves both that the export is faithful and that bucketed padding does not move results.
"""

from __future__ import annotations

import inspect
import io
import json
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from transformers import AutoModel

from aisle_export.core.towers import Tower, TowerError, load_tower
from aisle_server.tokenization import TOKENIZER_FILE, TextTokenizer, TokenizerSettings

MODEL_FILE = "model.onnx"
PARITY_FILE = "parity.json"
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "embedding"
MIN_OPSET = 17  # LayerNormalization became a single ONNX op in opset 17
PARITY_BATCH_SIZE = 8  # several batches of different padded lengths, not one batch padded to the longest

DEFAULT_PARITY_SENTENCES: tuple[str, ...] = (
    # product searches
    "red running shoes size 10",
    "usb-c charger 65w",
    "Nike Air Zoom Pegasus 40 men's",
    "Apple AirPods Pro (2nd generation) with MagSafe case",
    'Samsung 55" QLED 4K smart TV',
    "LEGO Star Wars Millennium Falcon 75192",
    "organic extra virgin olive oil 1l",
    "noise cancelling headphones under $200",
    "stainless steel water bottle 32 oz insulated",
    "kids winter jacket waterproof age 6-7",
    "Dyson V15 Detect cordless vacuum",
    "4k webcam for streaming",
    "ergonomic office chair with lumbar support",
    "AA batteries 24 pack",
    "gluten-free pasta",
    "iphone 15 case",
    "KitchenAid Artisan stand mixer, empire red",
    "mechanical keyboard cherry mx brown tkl",
    "dog food grain free large breed 30 lb",
    "yoga mat",
    # non-ASCII and emoji
    "crème brûlée ramekins",
    "Müsli ohne Zucker 750 g",
    "café au lait bowls set of 4",
    "jalapeño hot sauce",
    "日本茶 抹茶 100g",
    "birthday party balloons 🎈🎉 gold",
    "❤️ heart shaped sunglasses",
    # movie titles (MovieLens style)
    "Toy Story (1995)",
    "Jumanji (1995)",
    "Heat (1995)",
    "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)",
    "Star Wars: Episode IV - A New Hope (1977)",
    "Shawshank Redemption, The (1994)",
    "Spirited Away (Sen to Chihiro no kamikakushi) (2001)",
    "Crouching Tiger, Hidden Dragon (Wo hu cang long) (2000)",
    "Seven (a.k.a. Se7en) (1995)",
    # edge cases: a single character, a single word and a text far beyond max_length (truncation)
    "a",
    "headphones",
    (
        "Ultra-lightweight trail running shoe designed for long distances on technical terrain. "
        "The breathable engineered mesh upper wraps the foot securely while a reinforced toe cap "
        "protects against rocks and roots. A responsive foam midsole delivers cushioning that lasts "
        "mile after mile, and the rock plate underneath spreads impact from sharp stones. The outsole "
        "uses a sticky rubber compound with 5 mm multidirectional lugs for grip on wet slabs, loose "
        "gravel, mud and snow. A gusseted tongue keeps debris out, the heel counter is padded for "
        "comfort on steep descents, and the quick-lace system with a stash pocket lets you adjust fit "
        "on the move. Available in regular and wide widths, sizes 6 to 15, in five colourways: "
        "midnight blue, forest green, volcanic orange, glacier grey and classic black. Drop: 6 mm. "
        "Stack height: 32 mm heel, 26 mm forefoot. Weight: 255 g (US men's 9). Vegan materials, "
        "recycled polyester laces and a removable OrthoLite insole. Pairs well with merino wool "
        "socks, a hydration vest, trekking poles and gaiters for alpine ultramarathons, fastpacking "
        "trips and everyday trail training. Care instructions: remove insoles, rinse with cold water, "
        "air dry away from direct heat, and never put them in the washing machine or tumble dryer. "
        "Warranty: two years against manufacturing defects; free returns within 60 days of purchase "
        "if unworn. Customers also bought: running socks, energy gels, a GPS sports watch, a head "
        "torch for night runs, blister plasters, and a lightweight waterproof jacket with taped seams."
    ),
)


class ParityError(ValueError):
    """The ONNX graph's embeddings differ from sentence-transformers beyond the threshold."""


@dataclass(frozen=True)
class ParityReport:
    """Cosine agreement between the reference encoder and the exported graph."""

    n: int
    min_cosine: float
    mean_cosine: float
    max_abs_diff: float
    threshold: float
    passed: bool
    worst_sentence: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n"

    def save(self, out_dir: Path) -> Path:
        path = Path(out_dir) / PARITY_FILE
        path.write_text(self.to_json(), encoding="utf-8")
        return path


@dataclass(frozen=True)
class ExportResult:
    onnx_path: Path
    tower: Tower
    parity: ParityReport


class PooledEncoder(torch.nn.Module):
    """Transformer → attention-mask-weighted mean pooling → L2 normalisation (sentence-transformers' recipe)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        # BERT-style models embed a segment id; single texts are segment 0, which is what
        # sentence-transformers' tokenizer feeds too. Models without segments must not receive it.
        self.needs_token_type_ids = "token_type_ids" in inspect.signature(model.forward).parameters

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        extra = {"token_type_ids": torch.zeros_like(input_ids)} if self.needs_token_type_ids else {}
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=1)


def _progress(message: str, started: float) -> None:
    print(f"[aisle export] {message} ({time.perf_counter() - started:.1f}s)", flush=True)


def _trace_to_onnx(encoder: PooledEncoder, opset: int) -> onnx.ModelProto:
    """Trace ``encoder`` with the TorchScript exporter and return the ONNX model.

    ``dynamo=False``: torch 2.13 defaults to the torch.export-based exporter, which needs
    ``onnxscript`` (not a dependency); the TorchScript exporter handles BERT-family towers and the
    parity check guards the trace. The dummy batch contains padding so no "no padding" shortcut
    can be traced into the graph.
    """
    input_ids = torch.full((2, 16), 1000, dtype=torch.int64)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 9:] = 0
    token_axes = {0: "batch", 1: "sequence"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # Known and harmless for this graph, silenced so real warnings stand out:
        # we chose the TorchScript exporter on purpose (see above); it also calls its own deprecated helpers
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\.")
        # the padding-mask lookup indexes with aranges, never negative indices
        warnings.filterwarnings("ignore", message="Exporting aten::index operator", category=UserWarning)
        # shape checks in the mask builder that are constant for self-attention (q_len == kv_len)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"transformers\.masking_utils")
        torch.onnx.export(
            encoder,
            (input_ids, attention_mask),
            buffer,
            dynamo=False,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes={
                **dict.fromkeys(INPUT_NAMES, token_axes),
                OUTPUT_NAME: {0: "batch"},
            },
            opset_version=opset,
            do_constant_folding=True,
        )
    return onnx.load_model_from_string(buffer.getvalue())


def export_tower(
    tower_path: str | Path | None,
    out_dir: Path,
    opset: int = MIN_OPSET,
    parity_sentences: Sequence[str] = DEFAULT_PARITY_SENTENCES,
) -> ExportResult:
    """Write ``model.onnx``, ``tokenizer.json`` and ``tokenizer_settings.json`` to ``out_dir``, then check parity.

    Parity runs as part of the export so a graph that disagrees with the reference never leaves
    this function silently (:class:`ParityError`); ``parity.json`` records the figures either way.
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is too old: the encoder graph needs opset >= {MIN_OPSET}")
    started = time.perf_counter()
    tower = load_tower(tower_path)
    tokenizer_json = tower.path / TOKENIZER_FILE
    if not tokenizer_json.is_file():
        raise TowerError(f"tower {str(tower.path)!r} has no {TOKENIZER_FILE} (the server tokenizer needs it)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _progress(f"tower {tower.path} (dim={tower.dim}, max_length={tower.max_length})", started)

    # eager attention: plain matmul/softmax ops, no SDPA dispatch decisions baked into the trace
    model = AutoModel.from_pretrained(tower.path, attn_implementation="eager").eval()
    _progress("loaded weights", started)

    with torch.inference_mode():
        graph = _trace_to_onnx(PooledEncoder(model), opset)
    # The tracer leaves the embedding width symbolic; pin it so Triton and clients see [batch, dim].
    graph.graph.output[0].type.tensor_type.shape.dim[1].dim_value = tower.dim
    onnx.checker.check_model(graph, full_check=True)
    onnx_path = out_dir / MODEL_FILE
    onnx.save(graph, onnx_path)
    _progress(f"exported and checked {onnx_path} (opset {opset})", started)

    shutil.copyfile(tokenizer_json, out_dir / TOKENIZER_FILE)
    TokenizerSettings(max_length=tower.max_length).save(out_dir)
    _progress("wrote tokenizer files; checking parity", started)

    report = check_parity(tower.path, out_dir, list(parity_sentences))
    _progress(f"parity ok: min cosine {report.min_cosine:.7f} over {report.n} sentences", started)
    return ExportResult(onnx_path=onnx_path, tower=tower, parity=report)


def check_parity(
    tower_path: str | Path | None,
    out_dir: Path,
    sentences: list[str],
    threshold: float = 0.9999,
) -> ParityReport:
    """Compare ``out_dir/model.onnx`` (fed by the server tokenizer) with sentence-transformers.

    Saves ``parity.json`` before judging, so a failed export still leaves its figures behind.
    Raises :class:`ParityError` naming the worst sentence when ``min_cosine < threshold``.
    """
    from sentence_transformers import SentenceTransformer  # slow import, only needed here

    if not sentences:
        raise ValueError("check_parity needs at least one sentence")
    out_dir = Path(out_dir)
    tower = load_tower(tower_path)
    reference = SentenceTransformer(str(tower.path), device="cpu").encode(
        sentences, normalize_embeddings=True, convert_to_numpy=True
    )

    tokenizer = TextTokenizer.from_directory(out_dir)
    session = ort.InferenceSession(str(out_dir / MODEL_FILE), providers=["CPUExecutionProvider"])
    batches = []
    for start in range(0, len(sentences), PARITY_BATCH_SIZE):
        input_ids, attention_mask = tokenizer(sentences[start : start + PARITY_BATCH_SIZE])
        batches.append(session.run([OUTPUT_NAME], {"input_ids": input_ids, "attention_mask": attention_mask})[0])
    candidate = np.concatenate(batches).astype(np.float64)
    reference = reference.astype(np.float64)  # float64 so the figures are not float32 rounding noise

    cosines = np.sum(reference * candidate, axis=1) / (
        np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    )
    worst = int(np.argmin(cosines))
    min_cosine = float(cosines[worst])
    report = ParityReport(
        n=len(sentences),
        min_cosine=min_cosine,
        mean_cosine=float(cosines.mean()),
        max_abs_diff=float(np.abs(reference - candidate).max()),
        threshold=threshold,
        passed=min_cosine >= threshold,
        worst_sentence=sentences[worst],
    )
    report.save(out_dir)
    if not report.passed:
        raise ParityError(
            f"ONNX export disagrees with sentence-transformers: min cosine {report.min_cosine:.7f} < "
            f"threshold {threshold} (mean {report.mean_cosine:.7f}, max abs diff {report.max_abs_diff:.2e}, "
            f"n={report.n}); worst sentence: {report.worst_sentence[:200]!r}"
        )
    return report
