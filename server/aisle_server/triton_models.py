"""The ``TritonPythonModel`` classes behind ``model_repository/*/1/model.py``.

Each ``model.py`` only puts the environment on ``sys.path`` and re-exports one class from here, so
the code Triton runs is ordinary package code. ``triton_python_backend_utils`` exists only inside
the Triton stub, so it is imported when a model initializes, never at module import.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from typing import Any

from aisle_contract import (
    EXPLAIN,
    FILTER_NAMES,
    INTEREST_OUTPUT,
    MAX_RULES_BYTES,
    OP,
    RESULT,
    RULE_OPS,
    RULE_SET,
    RULES,
    USER_ID,
    RankingConfig,
)

from .catalog_io import CATALOG_INPUTS, pack_changed, parse_changes
from .encoder import INPUT_NAMES, OUTPUT_NAME, EmptyTextMemo, OnnxEncoder, check_token_inputs, token_limits
from .errors import InvalidInput, StateUnavailable
from .exploration import ExposureCounts
from .index import INDEX_DIRNAME, CatalogIndex, rerank_versions
from .learned import LEARNED_DIRNAME, attach_learned
from .live_catalog import CatalogChanges, CatalogWriter, LiveCatalog
from .metrics import CatalogOverlay, EventCounts, StateLookups, TritonMetrics, reject_reason, request_rows
from .processes import lower_priority
from .ranking import RankRequest, rank_groups
from .rerank_io import KNOB_NAMES, pack_results, parse_requests
from .rule_store import LiveRules, RuleAdmin, RuleStore
from .state import STATE_URL_ENV, ShopperState, StateReads, StateSettings, connect
from .tokenization import TOKENIZER_FILE, TextDecodeError, TextTokenizer, decode_field, decode_utf8
from .track_io import TRACK_INPUTS, pack_tracked, parse_event_types, parse_events
from .triton_adapter import (
    Arrays,
    error_response,
    handle_batched,
    handle_each,
    handle_together,
    model_parameters,
    read_inputs,
    response,
)

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
        self.instance_name = args.get("model_instance_name", "")
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
    Parameter ``nice``: how much to lower this instance's CPU priority (``lower_priority``), so
    that the short stages sharing its cores (tokenizer, rerank) are not kept waiting behind it.
    """

    def setup(self) -> None:
        lower_priority(int(self.parameters.get("nice", "0")))
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
        base = attach_learned(index, os.path.join(os.path.dirname(self.directory), LEARNED_DIRNAME))
        state = ShopperState.from_environment()  # AISLE_STATE_URL; without it USER_ID reads nothing
        self.state = None if state is None else self._state_reads(state)
        # live catalog changes from the same store, applied in the background (aisle_server.live_catalog)
        changes = None if state is None else CatalogChanges(state.redis, state.spec)
        overlay = CatalogOverlay(getattr(self, "metrics", None) or TritonMetrics(self.pb_utils), self.instance_name)
        self.live = LiveCatalog(base, changes, self.config.catalog_poll_s, overlay.refreshed).start()
        # merchandising rule sets from the same store, polled alike (aisle_server.rule_store)
        # exposure and click counts for explore rules, read from the event log once a set needs them
        poll = self.config.catalog_poll_s
        events = None if state is None else ExposureCounts(state.redis, state.layout.event_streams(), poll)
        self.rules = LiveRules(None if state is None else RuleStore(state.redis, state.spec), poll, events)
        self.rules.start()

    @property
    def index(self) -> CatalogIndex:
        """The catalog as of the last change applied (one reference: a request never mixes two)."""
        return self.live.index

    def _state_reads(self, state: ShopperState) -> StateReads:
        """Reads counted and timed on Triton's metrics endpoint (``aisle_server.metrics``)."""
        self.metrics = TritonMetrics(self.pb_utils)  # holds the metric families: they live as long as the model
        self.lookups = StateLookups(self.metrics)
        return StateReads(state, on_failure=self.lookups.failed, on_lookup=self.lookups.observe)

    def parse(self, index: CatalogIndex, inputs: Arrays) -> list[RankRequest]:
        """A request's rows, with the merchandising rules each resolves to."""
        requests = parse_requests(inputs, self.config, len(index), index.dim, state=self.state)
        schema = index.attributes.schema if index.attributes is not None else {}
        return [replace(r, rules=self.rules.resolve(r.config, schema)) for r in requests]

    def execute(self, requests: list[Any]) -> list[Any]:
        # the dynamic batch's requests ranked together (ranking.rank_groups: one batched graph search),
        # each answered as if alone; parsed and packed alone, so bad input stays with its request.
        # INTEREST is built only when asked: the ensemble asks for every output it maps, so the
        # others are kept (the explanations only when a row asked: rerank_io.pack_results)
        index = self.index  # one catalog version for the whole batch
        return handle_together(
            self.pb_utils,
            requests,
            RERANK_INPUTS,
            lambda inputs: self.parse(index, inputs),
            lambda groups: rank_groups(index, groups),
            lambda request, results: pack_results(
                results, index.dim if INTEREST_OUTPUT in request.requested_output_names() else None, explanations=True
            ),
        )

    def finalize(self) -> None:
        self.live.stop()
        self.rules.stop()
        if self.rules.counts is not None:
            self.rules.counts.stop()


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
        self.metrics = TritonMetrics(self.pb_utils)  # holds the metric families: they live as long as the model
        self.counts = EventCounts(self.metrics)
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
            inputs = {}
            try:
                inputs = read_inputs(request, TRACK_INPUTS)
                parsed.append((i, parse_events(inputs, self.event_types)))
            except Exception as exc:  # noqa: BLE001 - this request only
                self.counts.refused(reject_reason(exc), request_rows(inputs))
                responses[i] = error_response(self.pb_utils, exc)
        if parsed:
            try:
                if self.state is None:
                    raise StateUnavailable("state store unavailable: none configured (AISLE_STATE_URL)")
                stored = self.state.store([event for _, events in parsed for event in events])
            except Exception as exc:  # noqa: BLE001 - every request that wrote fails alike, the model serves on
                self.counts.refused(reject_reason(exc), sum(len(events) for _, events in parsed))
                for i, _ in parsed:
                    responses[i] = error_response(self.pb_utils, exc)
            else:
                self.counts.stored(stored)
                start = 0
                for i, events in parsed:
                    responses[i] = response(self.pb_utils, pack_tracked(events, stored[start : start + len(events)]))
                    start += len(events)
        return responses


def newest_index(repository: str) -> CatalogIndex | None:
    """The index of ``rerank``'s newest version in ``repository`` (None: there is none yet)."""
    for version in reversed(rerank_versions(repository)):
        directory = os.path.join(repository, "rerank", str(version), INDEX_DIRNAME)
        if os.path.isdir(directory):
            return CatalogIndex.load(directory, searchable=False)  # the item fields are all it reads
    return None


class CatalogModel(_Model):
    """Live catalog changes → the change log every ``rerank`` instance applies (``aisle_server.live_catalog``).

    New items and changed texts are embedded by the item tower through ``embed_item`` (a BLS call),
    so a live item's vector comes from the very graphs that indexed the catalog. Each request is
    one MULTI/EXEC in the store: all its changes are logged or none. The items the catalog already
    has come from the newest ``rerank`` version's index, read at load; items changed since are in
    the store. With the store unreachable every request is UNAVAILABLE (``aisle.StateUnavailable``).
    """

    def setup(self) -> None:
        url = os.environ.get(STATE_URL_ENV, "").strip()
        if not url:
            LOG.warning("no state store (%s unset): catalog answers UNAVAILABLE", STATE_URL_ENV)
        timeout_s = float(self.parameters.get("state_timeout_s", "2.0"))
        changes = CatalogChanges(connect(url, timeout_s), url) if url else None
        base = newest_index(os.path.dirname(os.path.dirname(self.directory)))  # <repo>/catalog/<v> → <repo>
        self.writer = None if changes is None else CatalogWriter(changes, base, self.embed)

    def embed(self, texts: list[str]) -> Any:
        """Item-tower vectors of ``texts`` through ``embed_item`` (BLS), ≤ one batch per call."""
        import numpy as np

        out = []
        for start in range(0, len(texts), 64):
            chunk = np.array([[t.encode("utf-8")] for t in texts[start : start + 64]], dtype=object)
            reply = self.pb_utils.InferenceRequest(
                model_name="embed_item",
                requested_output_names=["EMBEDDING"],
                inputs=[self.pb_utils.Tensor("TEXT", chunk)],
            ).exec()
            if reply.has_error():
                raise RuntimeError(f"embed_item failed: {reply.error().message()}")
            out.append(self.pb_utils.get_output_tensor_by_name(reply, "EMBEDDING").as_numpy())
        return np.concatenate(out)

    def change(self, inputs: Arrays) -> dict:
        if self.writer is None:
            parse_changes(inputs)  # bad input is still INVALID_ARGUMENT, naming the field
            raise StateUnavailable(f"state store unavailable: none configured ({STATE_URL_ENV})")
        return pack_changed(self.writer.write(parse_changes(inputs, self.writer.attributes)))

    def execute(self, requests: list[Any]) -> list[Any]:
        return handle_each(self.pb_utils, requests, CATALOG_INPUTS, self.change)


class RulesModel(_Model):
    """Merchandising rule sets: ``set`` / ``check`` / ``list`` / ``rollback`` (``aisle_server.rule_store``).

    A set is checked against the declared attributes of the newest ``rerank`` version's index, read
    at load, and refused with the place of its first error (INVALID_ARGUMENT) before anything is
    stored. With the store unreachable every request is UNAVAILABLE (``aisle.StateUnavailable``).
    """

    def setup(self) -> None:
        url = os.environ.get(STATE_URL_ENV, "").strip()
        if not url:
            LOG.warning("no state store (%s unset): rules answers UNAVAILABLE", STATE_URL_ENV)
        base = newest_index(os.path.dirname(os.path.dirname(self.directory)))
        attributes = base.attributes.schema if base is not None and base.attributes is not None else {}
        timeout_s = float(self.parameters.get("state_timeout_s", "2.0"))
        self.admin = None if not url else RuleAdmin(RuleStore(connect(url, timeout_s), url), attributes)

    def handle(self, inputs: Arrays) -> dict:
        import numpy as np

        values = {}
        for name in (OP, RULE_SET, RULES):
            array = inputs.get(name)
            if name != RULES and (array is None or array.size != 1):
                raise InvalidInput(name, "required, shape [1, 1]")
            if array is not None and array.size and len(array.reshape(-1)[0]) > MAX_RULES_BYTES:
                raise InvalidInput(name, f"more than {MAX_RULES_BYTES} bytes")
            values[name] = "" if array is None or not array.size else decode_field(name, array.reshape(-1)[:1], None)[0]
        op, name, text = values[OP], values[RULE_SET], values[RULES]
        if op not in RULE_OPS:
            raise InvalidInput(OP, f"{op!r} is not one of {', '.join(RULE_OPS)}")
        if self.admin is None:
            raise StateUnavailable(f"state store unavailable: none configured ({STATE_URL_ENV})")
        if op == "check":
            checked = self.admin.check(name, text)
            result: dict[str, object] = {"rule_set": name, "rules": len(checked.rules)}
        elif op == "set":
            result = self.admin.set(name, text)
        elif op == "list":
            result = self.admin.list(name)
        else:
            result = self.admin.rollback(name, rollback_target(text))
        return {RESULT: np.array([[json.dumps(result, ensure_ascii=False).encode("utf-8")]], dtype=object)}

    def execute(self, requests: list[Any]) -> list[Any]:
        return handle_each(self.pb_utils, requests, (OP, RULE_SET, RULES), self.handle)


def rollback_target(text: str) -> int | None:
    """A rollback's ``RULES``: ``{"to": VERSION}``, or empty / ``{}`` for the version before the newest."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        value = None
    to = value.get("to") if isinstance(value, dict) else "?"
    if to is not None and (isinstance(to, bool) or not isinstance(to, int)):
        raise InvalidInput(RULES, f'a rollback takes {{"to": VERSION}} or nothing, got {text!r}')
    return to
