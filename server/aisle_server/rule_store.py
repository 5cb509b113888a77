"""Merchandising rule sets in the state store: versioned, and applied by every ``rerank`` instance.

Key layout (the state store of ``aisle_server.state``, prefix ``aisle:``):

=============================  ================================================================
``aisle:{rules}:log``          Stream: every version of every rule set, in order — ``set`` (its
                               name), ``version`` (1, 2, ... per set), ``op`` (set / rollback),
                               ``rules`` (the set's canonical JSON), ``of`` (for a rollback: the
                               version it restored).
``aisle:{rules}:versions``     Hash: set name → its newest version (``HINCRBY`` in the same
                               script as the ``XADD``: two writers never take one version).
=============================  ================================================================

The ``rules`` model (``RuleAdmin``) checks a set against the catalog's declared attributes before
it writes anything — a malformed rule is refused at set time, with its place — and a rollback
writes the older version's rules again as a new version, so the stream is the whole history.
Every ``rerank`` instance polls the stream (``LiveRules``, the ``catalog_poll_s`` interval, like
live catalog changes) and serves a set's newest version from its next read on: within a second.
With the store down an instance keeps serving the sets it has.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from aisle_contract import DEFAULT_RULE_SET, RankingConfig, valid_rule_set_name

from .errors import InvalidInput, StateUnavailable
from .polling import Poller
from .rules import RuleError, RuleSet, parse
from .state import read_stream
from .state_keys import PREFIX
from .state_url import StateUrl, parse_state_url, store_errors
from .state_writes import SlotWrites

LOG = logging.getLogger("aisle.rules")

#: Both keys carry the hash tag ``{rules}``: one script writes both, which a Redis Cluster allows
#: only within one hash slot (``aisle_server.state_keys``); on one Redis the tag is just a name.
RULES_KEY = f"{PREFIX}{{rules}}:log"
VERSIONS_KEY = f"{PREFIX}{{rules}}:versions"
EMPTY = '{"rules":[]}'
#: Compiled ``draft_rules`` sets an instance keeps (oldest dropped first).
DRAFTS_KEPT = 8

# KEYS: the stream, the versions hash. ARGV: set name, op, canonical rules, of. Returns {version, id}.
SET_SCRIPT = """
local version = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
local id = redis.call('XADD', KEYS[1], '*', 'set', ARGV[1], 'version', version, 'op', ARGV[2],
                      'rules', ARGV[3], 'of', ARGV[4])
return {version, id}
"""


class RuleStore:
    """The rule sets' stream in Redis; every Redis error is raised as ``StateUnavailable``."""

    def __init__(self, redis_client: Any, spec: StateUrl | str | None = None):
        self.redis = redis_client
        self.spec = parse_state_url(spec or "redis://localhost") if not isinstance(spec, StateUrl) else spec
        self.url = self.spec.shown  # the password masked
        self.writes = SlotWrites(redis_client, self.spec)  # on the keys' master, WAITing for replicas

    def _unavailable(self, exc: Exception) -> StateUnavailable:
        return StateUnavailable(f"state store {self.url} unavailable: {type(exc).__name__}: {exc}")

    def append(self, name: str, source: str, op: str = "set", of: int = 0) -> tuple[int, str]:
        """Store ``source`` as ``name``'s next version; ``(version, stream id)``."""
        version, entry_id = self.writes.run(SET_SCRIPT, [RULES_KEY, VERSIONS_KEY], [name, op, source, of])
        return int(version), entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def read_after(self, last_id: str | None) -> list[tuple[str, dict[str, str]]]:
        try:
            return read_stream(self.redis, RULES_KEY, last_id)
        except store_errors() as exc:
            raise self._unavailable(exc) from exc

    def history(self, name: str) -> list[dict[str, object]]:
        """Every version of ``name``, oldest first: ``version``, ``op``, ``of``, ``rules`` (parsed), ``at``."""
        return [
            {
                "version": int(entry["version"]),
                "op": entry["op"],
                "of": int(entry.get("of") or 0),
                "rules": json.loads(entry["rules"])["rules"],
                "at": int(entry_id.split("-")[0]) / 1000.0,
            }
            for entry_id, entry in self.read_after(None)
            if entry["set"] == name
        ]


class RuleAdmin:
    """What the ``rules`` model does: check, store, list and roll back rule sets (Triton-free)."""

    def __init__(self, store: RuleStore, attributes: Mapping[str, str]):
        self.store = store
        self.attributes = dict(attributes)

    def check(self, name: str, text: str) -> RuleSet:
        if not valid_rule_set_name(name):
            raise InvalidInput("RULE_SET", f"{name!r}: a name is 1-64 letters, digits, '-', '_' or '.'")
        try:
            return parse(text, self.attributes, name)
        except RuleError as exc:
            raise InvalidInput("RULES", str(exc)) from None

    def set(self, name: str, text: str) -> dict[str, object]:
        rule_set = self.check(name, text)
        version, _ = self.store.append(name, rule_set.source)
        return {"rule_set": name, "version": version, "rules": len(rule_set.rules)}

    def list(self, name: str) -> dict[str, object]:
        history = self.store.history(name)
        current = history[-1] if history else None
        return {
            "rule_set": name,
            "version": current["version"] if current else 0,
            "rules": current["rules"] if current else [],
            "history": [{k: v for k, v in entry.items() if k != "rules"} for entry in history],
            "attributes": self.attributes,
        }

    def rollback(self, name: str, to: int | None = None) -> dict[str, object]:
        """Store version ``to`` (default: the one before the newest; 0: no rules) as the newest version."""
        history = self.store.history(name)
        if not history:
            raise InvalidInput("RULE_SET", f"rule set {name!r} has no versions to roll back")
        current = int(history[-1]["version"])  # type: ignore[call-overload]
        target = current - 1 if to is None else to
        if not 0 <= target < current:
            raise InvalidInput("RULES", f"cannot roll {name!r} back to version {target}: versions are 0-{current - 1}")
        source = EMPTY
        for entry in history:
            if entry["version"] == target:
                source = json.dumps(
                    {"rules": entry["rules"]}, separators=(",", ":"), ensure_ascii=False, sort_keys=True
                )
        self.check(name, source)  # the catalog's attributes may have changed since
        version, _ = self.store.append(name, source, "rollback", target)
        return {"rule_set": name, "version": version, "restored": target}


class LiveRules:
    """The rule sets one ``rerank`` instance serves: the stream, polled in the background.

    Sets are compiled against the attributes of the index that serves the request (once per set
    version and attribute schema), so a new index version never serves rules checked against another
    catalog's; a set that no longer compiles is logged and not applied.
    """

    def __init__(self, store: RuleStore | None, poll_s: float = 0.2, counts: Any = None):
        self.store = store
        #: ``exploration.ExposureCounts``: started by the first set that explores or reads exposures/clicks
        self.counts = counts
        self.sets: dict[str, tuple[int, str]] = {}  # name → (version, canonical JSON)
        self.last_id: str | None = None
        self.down = False
        self._compiled: dict[tuple[str, int, tuple[tuple[str, str], ...]], RuleSet | None] = {}
        self._unknown: set[str] = set()
        self._drafts: dict[tuple[str, tuple[tuple[str, str], ...]], RuleSet | None] = {}
        self._poller = Poller(
            self.refresh, poll_s, "aisle-live-rules", lambda: f"reading rule sets after {self.last_id}", LOG
        )

    def refresh(self) -> int:
        if self.store is None:
            return 0
        try:
            entries = self.store.read_after(self.last_id)
        except StateUnavailable as exc:
            if not self.down:
                self.down = True
                LOG.warning("%s; serving the rule sets as they were", exc)
            return 0
        self.down = False
        for entry_id, entry in entries:
            self.sets[entry["set"]] = (int(entry["version"]), entry["rules"])
            self.last_id = entry_id
        return len(entries)

    def start(self) -> LiveRules:
        self.refresh()
        if self.store is not None:
            self._poller.start()
        return self

    def stop(self) -> None:
        self._poller.stop()

    def resolve(self, config: RankingConfig, attributes: Mapping[str, str]) -> RuleSet | None:
        """The rule set a request gets (None: rules off, or none stored under its name).

        A name this instance has not read (yet) serves no rules, logged once per name: an error
        would fail requests for the moment between ``rules set`` of a new set and this instance's
        next read; ``aisle rules list`` shows which sets exist.
        """
        if not config.rules:
            return None
        if config.draft_rules:
            return self.draft(config.draft_rules, attributes)
        stored = self.sets.get(config.rule_set)
        if stored is None:
            if config.rule_set != DEFAULT_RULE_SET and config.rule_set not in self._unknown:
                self._unknown.add(config.rule_set)
                LOG.warning(
                    "no rule set %r (stored: %s): requests naming it get no rules", config.rule_set, sorted(self.sets)
                )
            return None
        version, source = stored
        key = (config.rule_set, version, tuple(sorted(attributes.items())))
        if key not in self._compiled:
            try:
                compiled: RuleSet | None = parse(source, attributes, config.rule_set, version)
                if compiled is not None and self.counts is not None and uses_counts(compiled):
                    compiled = replace(compiled, counts=self.counts.started().counts)
            except RuleError as exc:
                LOG.error("rule set %r version %d does not fit this catalog (%s): not applied", key[0], version, exc)
                compiled = None
            self._compiled[key] = compiled if compiled is None or compiled.rules else None
        return self._compiled[key]

    def draft(self, text: str, attributes: Mapping[str, str]) -> RuleSet | None:
        """A request's own rule set (``draft_rules``: a dry run), checked as ``rules check`` checks one.

        Nothing is stored; a malformed set fails that request only (INVALID_ARGUMENT naming
        ``DRAFT_RULES`` and the place). The last few drafts stay compiled: a console asks the same
        draft for several pages in a row.
        """
        key = (text, tuple(sorted(attributes.items())))
        if key not in self._drafts:
            try:
                compiled: RuleSet | None = parse(text, attributes, "draft")
            except RuleError as exc:
                raise InvalidInput("DRAFT_RULES", str(exc)) from None
            if compiled is not None and self.counts is not None and uses_counts(compiled):
                compiled = replace(compiled, counts=self.counts.started().counts)
            while len(self._drafts) >= DRAFTS_KEPT:
                self._drafts.pop(next(iter(self._drafts)))
            self._drafts[key] = compiled if compiled is not None and compiled.rules else None
        return self._drafts[key]


def uses_counts(rule_set: RuleSet) -> bool:
    """Whether a set needs exposure and click counts: an ``explore`` rule, or the names in an expression."""
    import re

    return any(rule.effect == "explore" for rule in rule_set.rules) or bool(
        re.search(r"\b(exposures|clicks)\b", rule_set.source)
    )
