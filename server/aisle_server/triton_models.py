"""The ``TritonPythonModel`` classes behind ``model_repository/*/1/model.py``.

Each ``model.py`` only puts the environment on ``sys.path`` and re-exports one class from here, so
the code Triton runs is ordinary package code. ``triton_python_backend_utils`` exists only inside
the Triton stub, so it is imported when a model initializes, never at module import.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from aisle_contract import EXPLAIN, FILTER_NAMES, USER_ID, RankingConfig

from .encoder import INPUT_NAMES, OUTPUT_NAME, EmptyTextMemo, OnnxEncoder, check_token_inputs, token_limits
from .errors import InvalidInput, StateUnavailable
from .index import INDEX_DIRNAME, CatalogIndex
from .learned import LEARNED_DIRNAME, attach_learned
from .ranking import rank_many
from .rerank_io import KNOB_NAMES, pack_results, parse_requests
from .state import ShopperState, StateReads, StateSettings
from .tokenization import TOKENIZER_FILE, TextDecodeError, TextTokenizer, decode_utf8
from .track_io import TRACK_INPUTS, pack_tracked, parse_event_types, parse_events
from .triton_adapter import Arrays, error_response, handle_batched, handle_each, model_parameters, read_inputs, response

LOG = logging.getLogger("aisle.triton")

RERANK_INPUTS = (
    "QUERY",
    "QUERY_EMBEDDING",
    "HISTORY_IDS",
    "HISTORY_TS",
    "HISTORY_EVENTS",
    "K",
    "NOW",
    USER_ID,
    *FILTER_NAMES,
    *KNOB_NAMES,
    EXPLAIN,
)


class _Model:
    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils  # only importable inside the stub

        self.pb_utils = triton_python_backend_utils
        self.directory = os.path.join(args["model_repository"], args["model_version"])
        self.parameters = model_parameters(args)
        self.setup()

    def setup(self) -> None:
        raise NotImplementedError


class TokenizerModel(_Model):
    """TEXT (BYTES [B, 1]) → INPUT_IDS, ATTENTION_MASK (INT64 [B, L], L a multiple of 16)."""

    def setup(self) -> None:
        self.tokenizer = TextTokenizer.from_directory(self.directory)

    def tokenize(self, inputs: Arrays) -> dict:
        text = inputs["TEXT"]
        if text is None or text.ndim != 2 or text.shape[1] != 1:
            raise InvalidInput("TEXT", "required, shape [batch, 1]")
        try:
            texts = decode_utf8(text[:, 0], self.tokenizer.max_chars)
        except TextDecodeError as exc:
            raise InvalidInput("TEXT", str(exc)) from None
        ids, mask = self.tokenizer(texts)
        return {"INPUT_IDS": ids, "ATTENTION_MASK": mask}

    def execute(self, requests: list[Any]) -> list[Any]:
        return handle_each(self.pb_utils, requests, ["TEXT"], self.tokenize)


class EncoderModel(_Model):
    """input_ids, attention_mask → embedding, one ONNX Runtime call per dynamic batch.

    The empty text (a feed call's missing query) is answered from memory (``EmptyTextMemo``).
    """

    def setup(self) -> None:
        path = os.path.join(self.directory, self.parameters.get("onnx_file", "model.onnx"))
        encoder = OnnxEncoder(path, intra_op_threads=int(self.parameters.get("intra_op_threads", "0")))
        self.encoder = encoder
        if os.path.exists(os.path.join(self.directory, TOKENIZER_FILE)):
            empty_ids, empty_mask = TextTokenizer.from_directory(self.directory)([""])
            self.encoder = EmptyTextMemo(encoder, empty_ids[0], empty_mask[0])
        self.limits = token_limits(self.directory)

    def validate(self, inputs: Arrays) -> None:
        check_token_inputs(inputs[INPUT_NAMES[0]], inputs[INPUT_NAMES[1]], *self.limits)

    def encode(self, inputs: Arrays) -> dict:
        return {OUTPUT_NAME: self.encoder(inputs[INPUT_NAMES[0]], inputs[INPUT_NAMES[1]])}

    def execute(self, requests: list[Any]) -> list[Any]:
        return handle_batched(self.pb_utils, requests, INPUT_NAMES, self.encode, self.validate)


class RerankModel(_Model):
    """Retrieve + rank over the catalog index in ``<version>/index``, with what ``rerank/learned/``
    holds (log popularity, co-occurrence, the user encoder: ``aisle_server.learned``).

    The user encoder runs here rather than as a Triton model of its own: it needs the history's
    rows of this very index (a separate model would receive ids and look them up again, or ship
    (B, H, d) embeddings over shared memory), and one batched ONNX Runtime call per ``execute``
    saves the extra ensemble hop.
    """

    def setup(self) -> None:
        self.config = RankingConfig.from_parameters(self.parameters)
        index = CatalogIndex.load(os.path.join(self.directory, INDEX_DIRNAME))
        self.index = attach_learned(index, os.path.join(os.path.dirname(self.directory), LEARNED_DIRNAME))
        state = ShopperState.from_environment()  # AISLE_STATE_URL; without it USER_ID reads nothing
        self.state = None if state is None else StateReads(state, self._failure_counter())

    def _failure_counter(self) -> Any:
        """``aisle_state_read_failures_total`` on Triton's metrics endpoint (None where unsupported)."""
        try:
            family = self.pb_utils.MetricFamily(
                name="aisle_state_read_failures_total",
                description="recommend calls whose USER_ID events could not be read from the state store",
                kind=self.pb_utils.MetricFamily.COUNTER,
            )
            metric = family.Metric(labels={"model": "rerank"})
        except Exception:  # noqa: BLE001 - a server without custom metrics still serves
            LOG.warning("custom metrics unavailable; state read failures are only logged")
            return None
        self._metric_family = family  # the metric lives as long as its family
        return lambda: metric.increment(1)

    def rank(self, inputs: Arrays) -> dict:
        requests = parse_requests(inputs, self.config, len(self.index), self.index.dim, state=self.state)
        return pack_results(rank_many(self.index, requests), self.index.dim, explanations=True)

    def execute(self, requests: list[Any]) -> list[Any]:
        return handle_each(self.pb_utils, requests, RERANK_INPUTS, self.rank)


class TrackModel(_Model):
    """Events → the state store (``aisle_server.state``): validated, idempotent by event id, durable.

    Every request of a dynamic batch is validated alone (a bad one is INVALID_ARGUMENT by itself);
    the valid ones' events go to Redis in one pipeline, so they share one AOF fsync. With the store
    unreachable (or none configured: ``AISLE_STATE_URL``) every request is UNAVAILABLE, which the
    SDK raises as ``aisle.StateUnavailable`` (retryable: the event ids make retries safe).
    """

    def setup(self) -> None:
        settings = StateSettings.from_parameters(self.parameters)
        self.event_types = parse_event_types(self.parameters.get("event_types"))
        self.state = ShopperState.from_environment(settings)
        if self.state is None:
            LOG.warning("no state store (%s unset): track answers UNAVAILABLE", "AISLE_STATE_URL")
        else:
            warning = self.state.check_durability()
            if warning:
                LOG.warning(warning)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        parsed = []
        for i, request in enumerate(requests):
            try:
                parsed.append((i, parse_events(read_inputs(self.pb_utils, request, TRACK_INPUTS), self.event_types)))
            except Exception as exc:  # noqa: BLE001 - this request only
                responses[i] = error_response(self.pb_utils, exc)
        if parsed:
            try:
                if self.state is None:
                    raise StateUnavailable("state store unavailable: none configured (AISLE_STATE_URL)")
                stored = self.state.store([event for _, events in parsed for event in events])
            except Exception as exc:  # noqa: BLE001 - every request that wrote fails alike, the model serves on
                for i, _ in parsed:
                    responses[i] = error_response(self.pb_utils, exc)
            else:
                start = 0
                for i, events in parsed:
                    responses[i] = response(self.pb_utils, pack_tracked(events, stored[start : start + len(events)]))
                    start += len(events)
        return responses
