"""Merchandising rules: parse and check a rule set once, then apply it to each request's candidates.

A rule set is JSON, ``{"rules": [RULE, ...]}``; each rule has an ``id``, an ``effect`` and, optionally,
``when`` (a condition on the request, checked once per request):

============  ================================================================================
``filter``    ``match``: an item condition; ``action`` ``keep`` (default: only matching items
              stay) or ``drop`` (matching items go)
``boost``     ``match`` and ``add`` (≥ 0) or ``multiply`` (≥ 1): a matching item's score gains
              ``add``, or ``|score| · (multiply − 1)``; ``add``/``multiply`` may be expressions
``bury``      the same with ``add`` ≤ 0 or ``multiply`` in [0, 1]
``pin``       ``item`` (an id) at 1-based ``position``
``slot``      ``match`` and ``share`` in (0, 1]: ``max(1, round(share · k))`` places of the page go
              to the best matching candidates; with fewer matching, the rest go back to the page
============  ================================================================================

Expressions are Python expression syntax parsed with :mod:`ast` and checked against a whitelist —
never ``eval``. Names: the catalog's declared attributes (``aisle_server.attributes``), item signals
(``score``: the score before rules, ``popularity``, ``age_days``, ``category``, ``item_id``,
``in_stock``) and the request (``has_query``, ``surface``, ``segment``; ``when`` may only use
these). Operators: ``and or not``, comparisons (chains too), ``in``/``not in`` (a string in a
``string_list`` attribute, or a value in a literal list), ``+ - * /`` and ``has(name)`` (the
attribute is set). Every name and type is checked when the set is stored, so a bad rule is refused
with its place (``rules[2].match, column 7: unknown name 'prise'``), never at serving time. A
missing number compares false; a missing string is ``""``; a missing bool reads false.

How a request's page is made (``apply``; ``ranking`` calls it after scoring, before diversity):
rules whose ``when`` fails do nothing; pinned items join the candidates; filters drop candidates;
boosts and buries add their deltas, each computed from the score before rules (so their order does
not matter); the candidates are re-sorted; slots take their items; diversity picks the rest of the
page; slot items are placed among the page by score; pins go to their positions last (lowest
position first, then rule order). A pinned or slotted item still obeys the request's filters, the
stock and every filter rule.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aisle_contract import EXPLORATION_ARM

from .attributes import SEP

#: Types of values an expression computes. ``list`` is a literal list, only for ``in``.
NUMBER, STRING, BOOL, STRING_LIST, LIST = "number", "string", "bool", "string_list", "list"
CONTEXT_NAMES = {"has_query": BOOL, "surface": STRING, "segment": STRING}
SIGNAL_NAMES = {
    "score": NUMBER,
    "popularity": NUMBER,
    "age_days": NUMBER,
    "category": STRING,
    "item_id": STRING,
    "in_stock": BOOL,
    "exposures": NUMBER,  # times the item was shown, from the tracked exposure events (``exploration``)
    "clicks": NUMBER,  # its tracked clicks
}
EFFECTS = ("filter", "boost", "bury", "pin", "slot", "explore")
_KEYS = {
    "filter": {"match", "action"},
    "boost": {"match", "add", "multiply"},
    "bury": {"match", "add", "multiply"},
    "pin": {"item", "position"},
    "slot": {"match", "share"},
    "explore": {"match", "share", "max_exposures"},
}
MAX_RULES = 200
MAX_EXPRESSION_CHARS = 2000


class RuleError(ValueError):
    """A rule set that cannot be stored; ``where`` is the place (``rules[2].match, column 7``)."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}" if where else reason)
        self.where = where
        self.reason = reason


# --------------------------------------------------------------------------- expressions

Env = Any  # ``_Env``: what a compiled expression reads
Compiled = Callable[[Env], Any]


@dataclass(frozen=True)
class Expression:
    """A checked expression: its source, result type, and the function computing it."""

    source: str
    kind: str
    run: Compiled
    item_level: bool  # reads item names (else: the request only)


class _Compiler:
    """Type-checks an ``ast`` expression against the whitelist and turns it into numpy closures."""

    def __init__(self, attributes: Mapping[str, str], where: str, context_only: bool):
        self.attributes = attributes
        self.where = where
        self.context_only = context_only
        self.item_level = False

    def fail(self, node: ast.AST, reason: str) -> RuleError:
        column = getattr(node, "col_offset", 0) + 1
        return RuleError(f"{self.where}, column {column}", reason)

    def name(self, node: ast.Name) -> tuple[str, Compiled]:
        name = node.id
        if name in CONTEXT_NAMES:
            return CONTEXT_NAMES[name], lambda env: env.context[name]
        if name in SIGNAL_NAMES or name in self.attributes:
            if self.context_only:
                raise self.fail(
                    node, f"'when' reads the request only ({', '.join(CONTEXT_NAMES)}); {name!r} is an item's"
                )
            self.item_level = True
            kind = SIGNAL_NAMES.get(name) or self.attributes[name]
            if kind == STRING_LIST:  # only ever searched (``in``): as Python strings, converted once per request
                return kind, lambda env: env.strings(name)
            return kind, lambda env: env.item(name)
        known = sorted(CONTEXT_NAMES) + ([] if self.context_only else sorted(SIGNAL_NAMES) + sorted(self.attributes))
        raise self.fail(node, f"unknown name {name!r} (known: {', '.join(known)})")

    def compile(self, node: ast.AST) -> tuple[str, Compiled]:
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool):
                return BOOL, lambda env: value
            if isinstance(value, (int, float)):
                number = float(value)
                return NUMBER, lambda env: number
            if isinstance(value, str):
                return STRING, lambda env: value
            raise self.fail(node, f"constant {value!r} is not a number, string or bool")
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            return self.literal_list(node)
        if isinstance(node, ast.BoolOp):
            parts = [self.expect(value, BOOL) for value in node.values]
            if isinstance(node.op, ast.And):
                return BOOL, lambda env: _all([p(env) for p in parts])
            return BOOL, lambda env: _any([p(env) for p in parts])
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Not):
                inner = self.expect(node.operand, BOOL)
                return BOOL, lambda env: np.logical_not(inner(env))
            if isinstance(node.op, (ast.USub, ast.UAdd)):
                inner = self.expect(node.operand, NUMBER)
                sign = -1.0 if isinstance(node.op, ast.USub) else 1.0
                return NUMBER, lambda env: sign * inner(env)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            left, right = self.expect(node.left, NUMBER), self.expect(node.right, NUMBER)
            op = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: _divide}[type(node.op)]
            return NUMBER, lambda env: op(left(env), right(env))
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.fail(node, f"{type(node).__name__} is not allowed (see docs/merchandising.md for the grammar)")

    def expect(self, node: ast.AST, kind: str) -> Compiled:
        found, run = self.compile(node)
        if found != kind:
            raise self.fail(node, f"expected a {kind}, got a {found}")
        return run

    def literal_list(self, node: ast.List | ast.Tuple | ast.Set) -> tuple[str, Compiled]:
        values = []
        for element in node.elts:
            if not isinstance(element, ast.Constant) or isinstance(element.value, bool):
                raise self.fail(element, "a list holds string or number constants only")
            values.append(element.value)
        kinds = {isinstance(v, str) for v in values}
        if len(kinds) > 1:
            raise self.fail(node, "a list holds strings or numbers, not both")
        members = frozenset(values if kinds == {True} else (float(v) for v in values))
        return LIST, lambda env: members

    def compare(self, node: ast.Compare) -> tuple[str, Compiled]:
        parts = []
        left_node = node.left
        left_kind, left = self.compile(left_node)
        for op, right_node in zip(node.ops, node.comparators):
            right_kind, right = self.compile(right_node)
            if (
                isinstance(op, (ast.In, ast.NotIn))
                and right_kind == STRING_LIST
                and isinstance(left_node, ast.Constant)
                and isinstance(left_node.value, str)
                and isinstance(right_node, ast.Name)
            ):  # ``'promo' in tags``: the catalog-wide mask of the tag, kept with the attributes
                parts.append(_contains(right_node.id, left_node.value, isinstance(op, ast.NotIn)))
            else:
                parts.append(self.comparison(node, op, left_kind, left, right_kind, right))
            left_node, left_kind, left = right_node, right_kind, right
        return BOOL, (lambda env: _all([p(env) for p in parts])) if len(parts) > 1 else parts[0]

    def comparison(self, node: ast.AST, op: ast.cmpop, lk: str, left: Compiled, rk: str, right: Compiled) -> Compiled:
        if isinstance(op, (ast.In, ast.NotIn)):
            negate = isinstance(op, ast.NotIn)
            if lk == STRING and rk == STRING_LIST:
                test = _in_list_column
            elif lk in (STRING, NUMBER) and rk == LIST:
                test = _in_literal
            else:
                raise self.fail(
                    node, f"'in' takes a string in a string_list, or a value in a literal list; got {lk} in {rk}"
                )
            return (
                (lambda env: np.logical_not(test(left(env), right(env))))
                if negate
                else (lambda env: test(left(env), right(env)))
            )
        ops = {ast.Eq: np.equal, ast.NotEq: np.not_equal, ast.Lt: np.less, ast.LtE: np.less_equal}
        ops.update({ast.Gt: np.greater, ast.GtE: np.greater_equal})
        if type(op) not in ops:
            raise self.fail(node, f"{type(op).__name__} is not allowed")
        if lk != rk or lk in (LIST, STRING_LIST):
            raise self.fail(node, f"cannot compare a {lk} with a {rk}")
        if lk != NUMBER and type(op) not in (ast.Eq, ast.NotEq):
            raise self.fail(node, f"only numbers are ordered; got {lk}s")
        function = ops[type(op)]
        return lambda env: function(left(env), right(env))

    def call(self, node: ast.Call) -> tuple[str, Compiled]:
        if not (isinstance(node.func, ast.Name) and node.func.id == "has"):
            raise self.fail(node, "the only function is has(attribute)")
        if len(node.args) != 1 or node.keywords or not isinstance(node.args[0], ast.Name):
            raise self.fail(node, "has() takes one attribute name")
        name = node.args[0].id
        if name not in self.attributes:
            raise self.fail(node.args[0], f"has() takes a declared attribute; {name!r} is not one")
        if self.context_only:
            raise self.fail(node, "'when' reads the request only")
        self.item_level = True
        return BOOL, lambda env: env.present(name)


def _contains(name: str, tag: str, negate: bool) -> Compiled:
    if negate:
        return lambda env: ~env.contains(name, tag)
    return lambda env: env.contains(name, tag)


def _divide(a: Any, b: Any) -> Any:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.divide(a, b)


def _all(values: list[Any]) -> Any:
    out = values[0]
    for value in values[1:]:
        out = np.logical_and(out, value)
    return out


def _any(values: list[Any]) -> Any:
    out = values[0]
    for value in values[1:]:
        out = np.logical_or(out, value)
    return out


def _in_list_column(needle: Any, column: list[str]) -> Any:
    # a comprehension over the few hundred candidates: ``np.char.find`` costs ~10x more per element
    if np.ndim(needle) == 0:
        wanted = f"{SEP}{needle}{SEP}"
        return np.fromiter((wanted in c for c in column), dtype=bool, count=len(column))
    return np.array([f"{SEP}{n}{SEP}" in c for n, c in zip(needle.tolist(), column)], dtype=bool)


def _in_literal(value: Any, values: frozenset[Any]) -> Any:
    if not isinstance(value, np.ndarray):
        return value in values
    if len(values) <= 8:  # a few vectorized equalities beat a sort (np.isin) or a Python loop
        out = np.zeros(len(value), dtype=bool)
        for member in values:
            out |= value == member
        return out
    return np.fromiter((v in values for v in value.tolist()), dtype=bool, count=len(value))


def compile_expression(
    source: object, attributes: Mapping[str, str], where: str, context_only: bool = False, kind: str = BOOL
) -> Expression:
    """``source`` checked and compiled; ``RuleError`` with ``where`` and the column on any problem."""
    if not isinstance(source, str) or not source.strip():
        raise RuleError(where, f"an expression is a non-empty string, got {source!r}")
    if len(source) > MAX_EXPRESSION_CHARS:
        raise RuleError(where, f"{len(source)} characters; at most {MAX_EXPRESSION_CHARS}")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise RuleError(f"{where}, column {exc.offset or 1}", f"syntax error: {exc.msg}") from None
    compiler = _Compiler(attributes, where, context_only)
    found, run = compiler.compile(tree.body)
    if found != kind:
        raise RuleError(where, f"must be a {kind} expression, got a {found}")
    return Expression(source, kind, run, compiler.item_level)


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    id: str
    effect: str
    when: Expression | None = None
    match: Expression | None = None
    action: str = "keep"  # filter
    add: Expression | None = None  # boost/bury
    multiply: Expression | None = None
    item: str = ""  # pin
    position: int = 0
    share: float = 0.0  # slot, explore
    max_exposures: int = 100  # explore: items shown fewer times than this are explored


@dataclass(frozen=True)
class RuleSet:
    """A checked rule set (``parse``), ready for ``apply``; ``source``: its canonical JSON."""

    rules: tuple[Rule, ...]
    source: str
    name: str = ""
    version: int = 0
    #: exposure and click counts per item (``exploration.ItemCounts``), set by the serving instance
    counts: Any = None
    #: the Thompson draws' generator (None: fresh entropy per request; simulations fix one)
    rng: Any = None
    #: request context → the rules whose ``when`` holds (``active``): a ``when`` reads the context only
    in_force: dict[tuple[tuple[str, object], ...], list[Rule]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )


def parse(text: str | bytes, attributes: Mapping[str, str], name: str = "", version: int = 0) -> RuleSet:
    """Check a rule set's JSON text against the catalog's ``attributes``; ``RuleError`` names the place."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        position = f"line {exc.lineno}, column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise RuleError(position, f"not JSON: {exc.msg if isinstance(exc, json.JSONDecodeError) else exc}") from None
    if isinstance(document, list):
        document = {"rules": document}
    if not isinstance(document, dict) or set(document) != {"rules"} or not isinstance(document["rules"], list):
        raise RuleError("", 'a rule set is {"rules": [rule, ...]}')
    raw = document["rules"]
    if len(raw) > MAX_RULES:
        raise RuleError("rules", f"{len(raw)} rules; at most {MAX_RULES}")
    rules = [parse_rule(rule, attributes, f"rules[{i}]") for i, rule in enumerate(raw)]
    seen: dict[str, int] = {}
    for i, rule in enumerate(rules):
        if rule.id in seen:
            raise RuleError(f"rules[{i}].id", f"{rule.id!r} is also rules[{seen[rule.id]}]'s id")
        seen[rule.id] = i
    source = json.dumps({"rules": raw}, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return RuleSet(tuple(rules), source, name, version)


def _number(rule: Mapping[str, Any], key: str, where: str) -> float:
    value = rule[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RuleError(f"{where}.{key}", f"must be a finite number, got {value!r}")
    return float(value)


def parse_rule(rule: object, attributes: Mapping[str, str], where: str) -> Rule:
    if not isinstance(rule, dict):
        raise RuleError(where, f"a rule is a JSON object, got {type(rule).__name__}")
    rule_id, effect = rule.get("id"), rule.get("effect")
    if not isinstance(rule_id, str) or not 1 <= len(rule_id) <= 128:
        raise RuleError(f"{where}.id", "required: a string of 1-128 characters")
    if effect not in EFFECTS:
        raise RuleError(f"{where}.effect", f"{effect!r} is not one of {', '.join(EFFECTS)}")
    unknown = set(rule) - {"id", "effect", "when", "description"} - _KEYS[effect]
    if unknown:
        raise RuleError(where, f"unknown key(s) {sorted(unknown)} for a {effect} rule (keys: {sorted(_KEYS[effect])})")
    when = compile_expression(rule["when"], attributes, f"{where}.when", context_only=True) if "when" in rule else None
    out: dict[str, Any] = {"id": rule_id, "effect": effect, "when": when}
    if effect in ("filter", "boost", "bury", "slot", "explore"):
        if "match" not in rule:
            raise RuleError(f"{where}.match", f"required for a {effect} rule")
        out["match"] = compile_expression(rule["match"], attributes, f"{where}.match")
    if effect == "filter":
        out["action"] = rule.get("action", "keep")
        if out["action"] not in ("keep", "drop"):
            raise RuleError(f"{where}.action", f"{out['action']!r} is not keep or drop")
    elif effect in ("boost", "bury"):
        out.update(_amount(rule, attributes, where, effect))
    elif effect == "pin":
        item, position = rule.get("item"), rule.get("position")
        if not isinstance(item, str) or not item:
            raise RuleError(f"{where}.item", "required: the item id to pin")
        if isinstance(position, bool) or not isinstance(position, int) or not 1 <= position <= 1000:
            raise RuleError(f"{where}.position", f"required: a 1-based position of at most 1000, got {position!r}")
        out.update(item=item, position=position)
    else:
        if "share" not in rule:
            raise RuleError(f"{where}.share", f"required for a {effect} rule")
        share = _number(rule, "share", where)
        if not 0.0 < share <= (1.0 if effect == "slot" else 0.5):
            raise RuleError(f"{where}.share", f"{share!r} is not in (0, {1.0 if effect == 'slot' else 0.5}]")
        out["share"] = share
        if effect == "explore":
            cap = rule.get("max_exposures", 100)
            if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
                raise RuleError(f"{where}.max_exposures", f"a number of exposures >= 1, got {cap!r}")
            out["max_exposures"] = cap
    return Rule(**out)


def _amount(rule: Mapping[str, Any], attributes: Mapping[str, str], where: str, effect: str) -> dict[str, Any]:
    keys = [key for key in ("add", "multiply") if key in rule]
    if len(keys) != 1:
        raise RuleError(where, f"a {effect} rule has exactly one of add, multiply")
    key = keys[0]
    value = rule[key]
    if isinstance(value, str):
        return {key: compile_expression(value, attributes, f"{where}.{key}", kind=NUMBER)}
    number = _number(rule, key, where)
    low, high = {
        ("boost", "add"): (0.0, math.inf),
        ("bury", "add"): (-math.inf, 0.0),
        ("boost", "multiply"): (1.0, math.inf),
        ("bury", "multiply"): (0.0, 1.0),
    }[(effect, key)]
    if not low <= number <= high:
        raise RuleError(f"{where}.{key}", f"{number!r}: a {effect} {key}s a number in [{low}, {high}]")
    return {key: Expression(repr(number), NUMBER, lambda env: number, False)}


# --------------------------------------------------------------------------- applying


class _Env:
    """What expressions read for one request: its context, and item values of ``rows`` (gathered once)."""

    def __init__(
        self,
        index: Any,
        rows: np.ndarray,
        base: np.ndarray,
        context: Mapping[str, object],
        now: float,
        counts: Any = None,
    ):
        self.index = index
        self.rows = rows
        self.base = base
        self.context = context
        self.now = now
        self.counts = counts
        self.rng: np.random.Generator | None = None
        self.cache: dict[str, Any] = {}

    def item(self, name: str) -> np.ndarray:
        values = self.cache.get(name)
        if values is None:
            values = self.cache[name] = self._gather(name)
        return values

    def contains(self, name: str, tag: str) -> np.ndarray:
        """Whether each candidate's string_list attribute ``name`` holds ``tag``."""
        return self.index.attributes.contains(name, tag)[self.rows]

    def strings(self, name: str) -> list[str]:
        """A string_list attribute of the candidates as Python strings (what ``in`` searches)."""
        key = f"{name} as str"
        values = self.cache.get(key)
        if values is None:
            values = self.cache[key] = self.item(name).tolist()  # type: ignore[assignment]
        return values  # type: ignore[return-value]

    def _gather(self, name: str) -> np.ndarray:
        index, rows = self.index, self.rows
        if name == "score":
            return self.base
        if name == "popularity":
            return np.asarray(index.popularity[rows], dtype=np.float64)
        if name == "age_days":
            return (self.now - np.asarray(index.created_at[rows], dtype=np.float64)) / 86400.0
        if name == "category":
            return np.asarray(index.categories[rows])
        if name == "item_id":
            return np.asarray(index.item_ids[rows])
        if name == "in_stock":
            return np.asarray(index.in_stock[rows], dtype=bool)
        if name in ("exposures", "clicks"):
            if self.counts is None:  # an instance without a state store: nothing was ever counted
                return np.zeros(len(rows))
            exposures, clicks = self.counts.of(self.item("item_id").tolist())
            self.cache["exposures"], self.cache["clicks"] = exposures, clicks
            return exposures if name == "exposures" else clicks
        attributes = index.attributes  # the set was compiled against this index's schema (``rule_store``)
        values = np.asarray(attributes.columns[name][rows])
        return values == 1 if attributes.schema[name] == "bool" else values

    def present(self, name: str) -> np.ndarray:
        attributes = self.index.attributes
        if attributes is None or name not in attributes.schema:
            return np.zeros(len(self.rows), dtype=bool)
        values = np.asarray(attributes.columns[name][self.rows])
        kind = attributes.schema[name]
        if kind == "number":
            return ~np.isnan(values)
        if kind == "bool":
            return values >= 0
        return values != ""


def _mask(expression: Expression, env: _Env) -> np.ndarray:
    value = expression.run(env)
    if not isinstance(value, np.ndarray):  # an item condition that folded to a constant (``price > 1 or true``)
        return np.full(len(env.rows), bool(value))
    return np.asarray(value, dtype=bool)


def _amounts(expression: Expression, env: _Env) -> np.ndarray | float:
    """Per candidate (or one number for all): a non-finite amount (a missing attribute) adds nothing."""
    value = expression.run(env)
    if not isinstance(value, np.ndarray):
        return float(value) if math.isfinite(value) else 0.0
    return np.where(np.isfinite(value), value, 0.0)


@dataclass
class Outcome:
    """What the rules made of one request's candidates (positions index the candidates given)."""

    delta: np.ndarray  # float64 per candidate: what boosts and buries added
    order: np.ndarray  # candidate positions by adjusted score, best first, filtered-out ones left out
    page: list[int]  # candidate positions of the page, in page order
    #: (rule id, effect, what it added per candidate) of each boost and bury that changed anything
    changes: list[tuple[str, str, np.ndarray]] = field(default_factory=list)
    #: candidate position → the slot and pin rules that placed it
    placed: dict[int, list[dict[str, object]]] = field(default_factory=dict)

    def explored_by(self, positions: Sequence[int]) -> list[str]:
        """Per candidate at ``positions``, the ``explore`` rule that placed it (``""``: none)."""
        return [
            next((str(e["rule"]) for e in self.placed.get(int(p), ()) if e["effect"] == "explore"), "")
            for p in positions
        ]

    def effects(self, positions: Sequence[int]) -> list[list[dict[str, object]]]:
        """What each rule did to the candidates at ``positions`` (built only for an explanation)."""
        out = []
        for position in positions:
            effects: list[dict[str, object]] = [
                {"rule": rule, "effect": effect, "delta": float(change[position])}
                for rule, effect, change in self.changes
                if change[position]
            ]
            out.append(effects + self.placed.get(int(position), []))
        return out


#: ``pick(positions, scores, n)``: ``n`` of ``positions`` (best first, scored ``scores``) as the page's
#: diversity step chooses them; indices into ``positions``.
Pick = Callable[[np.ndarray, np.ndarray, int], Sequence[int]]


#: contexts whose active rules a set remembers (surfaces × segments × query or not); past it, it starts over
MAX_CONTEXTS = 1024


def active(rule_set: RuleSet, context: Mapping[str, object]) -> list[Rule]:
    """The rules whose ``when`` holds for a request (worked out once per distinct context)."""
    key = tuple(sorted(context.items()))
    found = rule_set.in_force.get(key)
    if found is None:
        env = _Env(None, np.zeros(0, dtype=np.int64), np.zeros(0), context, 0.0)
        found = [rule for rule in rule_set.rules if rule.when is None or bool(rule.when.run(env))]
        if len(rule_set.in_force) >= MAX_CONTEXTS:
            rule_set.in_force.clear()
        rule_set.in_force[key] = found
    return found


def pin_rows(index: Any, rules: Sequence[Rule]) -> dict[str, int]:
    """The catalog row of each item the active pin rules name (-1: not in the catalog); looked up
    once per request, for the candidates (``merchandising``) and for placing the pins (``apply``)."""
    items = [str(rule.item) for rule in rules if rule.effect == "pin"]
    return dict(zip(items, index.rows_of(items).tolist())) if items else {}


def apply(
    rules: Sequence[Rule],
    index: Any,
    rows: np.ndarray,
    base: np.ndarray,
    k: int,
    context: Mapping[str, object],
    now: float,
    pick: Pick,
    counts: Any = None,
    rng: np.random.Generator | None = None,
    pins: Mapping[str, int] | None = None,
) -> Outcome:
    """The page of ``k`` from candidate ``rows`` scored ``base``, with the active ``rules`` applied.

    ``rows`` must already hold the pinned items that may be shown (``pin_rows``, where allowed);
    ``counts``: exposures and clicks per item (``exploration.ItemCounts``) for ``explore`` rules and
    the ``exposures``/``clicks`` signals; ``rng``: their Thompson draws (default: fresh entropy);
    ``pins``: ``pin_rows`` of these rules, when the caller has it already.
    """
    env = _Env(index, rows, base, context, now, counts)
    env.rng = rng
    n = len(rows)
    keep = np.ones(n, dtype=bool)
    delta = np.zeros(n)
    changes: list[tuple[str, str, np.ndarray]] = []
    placed: dict[int, list[dict[str, object]]] = {}
    for rule in rules:
        if rule.effect == "filter":
            matched = _mask(rule.match, env)  # type: ignore[arg-type]  # filters have a match
            keep &= matched if rule.action == "keep" else ~matched
        elif rule.effect in ("boost", "bury"):
            matched = _mask(rule.match, env)  # type: ignore[arg-type]
            if rule.add is not None:
                change = np.where(matched, _amounts(rule.add, env), 0.0)
            else:
                factor = _amounts(rule.multiply, env)  # type: ignore[arg-type]  # one of add, multiply
                change = np.where(matched, np.abs(base) * (factor - 1.0), 0.0)
            delta += change
            changes.append((rule.id, rule.effect, change))
    adjusted = base + delta
    kept = np.flatnonzero(keep)
    order = kept[np.lexsort((rows[kept], -adjusted[kept]))]
    pins = pin_rows(index, rules) if pins is None else pins
    page = _page(rules, env, order, adjusted, keep, k, pick, placed, pins)
    return Outcome(delta, order, page, changes, placed)


def _page(
    rules: Sequence[Rule],
    env: _Env,
    order: np.ndarray,
    adjusted: np.ndarray,
    keep: np.ndarray,
    k: int,
    pick: Pick,
    placed: dict[int, list[dict[str, object]]],
    pins: Mapping[str, int],
) -> list[int]:
    slotted: list[int] = []
    for rule in rules:
        if rule.effect != "slot":
            continue
        matched = _mask(rule.match, env)  # type: ignore[arg-type]
        room = min(max(1, round(rule.share * k)), k - len(slotted))
        taken = set(slotted)
        for position in order[matched[order]].tolist():
            if room <= 0:
                break
            if position not in taken:
                slotted.append(position)
                placed.setdefault(position, []).append({"rule": rule.id, "effect": "slot"})
                room -= 1
    explored = _explore(rules, env, order, k, slotted, placed)
    if slotted or explored:
        taken = np.zeros(len(adjusted), dtype=bool)
        taken[slotted + explored] = True
        rest = order[~taken[order]]
    else:
        rest = order
    room = k - len(slotted) - len(explored)
    page = [int(rest[i]) for i in pick(rest, adjusted[rest], room)] if len(rest) and room > 0 else []
    for position in sorted(slotted, key=lambda p: -adjusted[p]):  # each before the first page item scored lower
        at = next((i for i, other in enumerate(page) if adjusted[other] < adjusted[position]), len(page))
        page.insert(at, position)
    for i, position in enumerate(explored):  # spread over the page: never all at the top, nor all at the end
        page.insert(min(len(page), (i + 1) * k // (len(explored) + 1)), position)
    for target, _, rule in sorted((rule.position, i, rule) for i, rule in enumerate(rules) if rule.effect == "pin"):
        row = pins[str(rule.item)]
        hits = np.flatnonzero((env.rows == row) & keep) if row >= 0 else ()
        if not len(hits):
            continue  # not in the catalog, not allowed for this request, or filtered out by a rule
        position = int(hits[0])
        if position in page:
            page.remove(position)
        page.insert(min(target - 1, len(page)), position)
        placed.setdefault(position, []).append({"rule": rule.id, "effect": "pin", "position": target})
    return page[:k]


def _explore(
    rules: Sequence[Rule],
    env: _Env,
    order: np.ndarray,
    k: int,
    slotted: list[int],
    placed: dict[int, list[dict[str, object]]],
) -> list[int]:
    """The candidates ``explore`` rules place: per rule, the highest Thompson draws among the matching
    candidates shown fewer than ``max_exposures`` times, ``max(1, round(share · k))`` of them."""
    from .exploration import thompson

    explored: list[int] = []
    for rule in rules:
        if rule.effect != "explore":
            continue
        exposures, clicks = env.item("exposures"), env.item("clicks")
        eligible = _mask(rule.match, env) & (exposures < rule.max_exposures)  # type: ignore[arg-type]
        eligible[slotted + explored] = False
        positions = order[eligible[order]]
        room = min(max(1, round(rule.share * k)), k - len(slotted) - len(explored))
        if not len(positions) or room <= 0:
            continue
        rng = env.rng if env.rng is not None else np.random.default_rng()
        draws = thompson(exposures[positions], clicks[positions], rng)
        for j in np.argsort(-draws, kind="stable")[:room].tolist():
            position = int(positions[j])
            explored.append(position)
            placed.setdefault(position, []).append(
                {
                    "rule": rule.id,
                    "effect": "explore",
                    "arm": EXPLORATION_ARM,
                    "draw": float(draws[j]),
                    "exposures": int(exposures[position]),
                    "clicks": int(clicks[position]),
                }
            )
    return explored


def context_of(has_query: bool, surface: str, segment: str) -> dict[str, object]:
    return {"has_query": has_query, "surface": surface, "segment": segment}
