"""``aisle experiment report``: per-arm online metrics of an A/B experiment from the event log.

Input: events (``user_id``, ``item_id``, ``event_type``, ``ts``, ``properties``) as JSONL, CSV or
Parquet — the ``aisle events export --raw`` file, or any log of the same columns. Exposures are
``exposure`` events whose properties name the ``experiment``, the ``arm``, the answer's
``request_id`` and the ``items`` shown (``aisle.RecClient(log_exposures=True)`` writes them).
Clicks, add-to-carts and purchases join to an exposure by ``properties.request_id`` when they carry
one, else to the shopper's latest exposure that showed the item at most ``window_s`` before.

Per arm: exposures (pages shown), shoppers, CTR, add-to-cart and conversion rates per impression
(outcomes per exposure) and per shopper (share of shoppers with at least one), revenue per shopper
when purchases carry a ``price`` (× ``quantity``, default 1). Positions an ``explore`` rule placed
(the exposure's ``explored`` positions) are counted apart: per arm, the click rate of explored
slots beside that of the slots ranked by score, so exploration's cost or gain is visible on its own
rather than folded into the arm's CTR. Statistics, all two-sided at
``alpha`` (0.05):

- the shopper is the unit (assignment is by shopper), so per-impression rates are ratio metrics with
  delta-method variances over shoppers (Deng et al., "Applying the Delta Method in Metric Analytics",
  KDD 2018): a shopper's many impressions are not independent draws;
- per-shopper rates get Wilson intervals; differences from the control a normal interval and p-value;
- sample-ratio mismatch: a chi-square test of shoppers per arm against the configured shares
  (``p < 0.001`` flags it: the assignment or the logging is broken, and no other figure is trustworthy);
- minimum detectable effect at the current sample size (power 0.8): ``(z₁₋α/₂ + z₀.₈)·SE(diff)``, and
  the shoppers per arm a given relative lift needs (``shoppers_needed``: the control's variance, and
  the treatment's under that lift).

Outputs ``report.md``, ``report.json`` and ``report.png`` in ``--out``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from aisle_contract.experiments import Experiment

EXPOSURE = "exposure"
OUTCOMES = {"click": "clicks", "add_to_cart": "add_to_carts", "purchase": "purchases"}
#: metric name → (outcome column, per-impression rate name)
RATES = {"ctr": "clicks", "add_to_cart_rate": "add_to_carts", "conversion_rate": "purchases"}
SRM_ALPHA = 0.001
DEFAULT_WINDOW_S = 24 * 3600.0


@dataclass
class ShopperTable:
    """One row per shopper in the experiment: the arm and the counts of what happened."""

    arm: np.ndarray
    exposures: np.ndarray
    clicks: np.ndarray
    add_to_carts: np.ndarray
    purchases: np.ndarray
    revenue: np.ndarray
    #: items shown (page slots), the slots an ``explore`` rule placed, and the clicks joined to those
    slots: np.ndarray | None = None
    explored_slots: np.ndarray | None = None
    explored_clicks: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in SLOT_COLUMNS:  # a table built without slot counts (simulations): none explored
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(len(self.arm)))

    def select(self, arm: str) -> ShopperTable:
        mask = self.arm == arm
        return ShopperTable(*(getattr(self, f)[mask] for f in ("arm", *COLUMNS, *SLOT_COLUMNS)))


COLUMNS = ("exposures", "clicks", "add_to_carts", "purchases", "revenue")
SLOT_COLUMNS = ("slots", "explored_slots", "explored_clicks")


@dataclass
class JoinStats:
    exposures: int = 0
    outcomes_joined_by_request_id: int = 0
    outcomes_joined_by_window: int = 0
    outcomes_unattributed: int = 0
    shoppers_in_several_arms: int = 0


# --------------------------------------------------------------------------- reading and joining


def read_events(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Events from JSONL/CSV/Parquet files: dicts with user_id, item_id, event_type, ts, properties (a dict)."""
    events: list[dict[str, Any]] = []
    for path in paths:
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".ndjson"):
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        elif suffix in (".csv", ".parquet"):
            import pandas as pd

            frame = pd.read_csv(path, dtype=str, keep_default_na=False) if suffix == ".csv" else pd.read_parquet(path)
            rows = frame.to_dict("records")
        else:
            raise ValueError(f"{path.name}: unsupported events extension {path.suffix!r} (.jsonl, .csv, .parquet)")
        for i, row in enumerate(rows):
            events.append(_event(row, f"{path.name}:{i + 1}"))
    return events


def _event(row: Mapping[str, Any], where: str) -> dict[str, Any]:
    try:
        properties = row.get("properties") or {}
        if isinstance(properties, str):
            properties = json.loads(properties)
        ts = float(row["ts"] if "ts" in row else row["timestamp"])
        return {
            "user_id": str(row["user_id"]),
            "item_id": str(row["item_id"]),
            "event_type": str(row["event_type"]),
            "ts": ts,
            "properties": dict(properties),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{where}: bad event ({type(exc).__name__}: {exc})") from None


def shopper_table(
    events: Iterable[Mapping[str, Any]], experiment: str, window_s: float = DEFAULT_WINDOW_S
) -> tuple[ShopperTable, JoinStats]:
    """Join outcomes to the experiment's exposures and count them per shopper."""
    ordered = sorted(events, key=lambda e: e["ts"])
    joined = JoinStats()
    arm_of: dict[str, str] = {}
    counts: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys((*COLUMNS, *SLOT_COLUMNS), 0.0))
    by_request: dict[str, str] = {}  # request_id → shopper
    shown: dict[tuple[str, str], float] = {}  # (shopper, item) → latest exposure time
    explored_in: dict[str, set[str]] = {}  # request_id → the items explore rules placed on that page
    explored_when: dict[tuple[str, str], float] = {}  # (shopper, item) → latest exposure that explored it
    several: set[str] = set()
    for event in ordered:
        props, user = event["properties"], event["user_id"]
        if event["event_type"] == EXPOSURE:
            if props.get("experiment") != experiment or "arm" not in props:
                continue
            arm = str(props["arm"])
            if arm_of.setdefault(user, arm) != arm:
                several.add(user)
            joined.exposures += 1
            counts[user]["exposures"] += 1
            items = [str(item) for item in props.get("items") or [event["item_id"]]]
            explored = _explored_items(props, items)
            counts[user]["slots"] += len(items)
            counts[user]["explored_slots"] += len(explored)
            if props.get("request_id"):
                by_request[str(props["request_id"])] = user
                explored_in[str(props["request_id"])] = explored
            for item in items:
                shown[(user, item)] = event["ts"]
            for item in explored:
                explored_when[(user, item)] = event["ts"]
            continue
        column = OUTCOMES.get(event["event_type"])
        if column is None:
            continue
        request_id, key = props.get("request_id"), (user, event["item_id"])
        if request_id and by_request.get(str(request_id)) == user:
            joined.outcomes_joined_by_request_id += 1
            explored_slot = event["item_id"] in explored_in.get(str(request_id), ())
        elif user in arm_of and event["ts"] - shown.get(key, -math.inf) <= window_s:
            joined.outcomes_joined_by_window += 1
            explored_slot = explored_when.get(key) == shown[key]  # the latest page showing it explored it
        else:
            joined.outcomes_unattributed += 1
            continue
        counts[user][column] += 1
        if column == "clicks" and explored_slot:
            counts[user]["explored_clicks"] += 1
        if column == "purchases" and "price" in props:
            counts[user]["revenue"] += float(props["price"]) * float(props.get("quantity", 1))
    joined.shoppers_in_several_arms = len(several)
    users = list(arm_of)
    table = ShopperTable(
        np.array([arm_of[u] for u in users], dtype=object),
        *(np.array([counts[u][c] for u in users], dtype=np.float64) for c in (*COLUMNS, *SLOT_COLUMNS)),
    )
    return table, joined


def _explored_items(props: Mapping[str, Any], items: Sequence[str]) -> set[str]:
    """The items at an exposure's ``explored`` positions (``aisle.exposure_event`` writes them)."""
    positions = [entry.get("position") for entry in props.get("explored") or () if isinstance(entry, Mapping)]
    return {items[p] for p in positions if isinstance(p, int) and 0 <= p < len(items)}


# --------------------------------------------------------------------------- statistics


@dataclass
class Estimate:
    value: float
    variance: float
    low: float
    high: float


def ratio_estimate(numerator: np.ndarray, denominator: np.ndarray, alpha: float = 0.05) -> Estimate:
    """Σnum / Σden with its delta-method variance over units (shoppers), and a normal interval."""
    n = len(numerator)
    if n == 0 or denominator.sum() <= 0:
        return Estimate(math.nan, math.nan, math.nan, math.nan)
    mean_num, mean_den = float(numerator.mean()), float(denominator.mean())
    ratio = mean_num / mean_den
    if n < 2:
        return Estimate(ratio, math.nan, math.nan, math.nan)
    cov = np.cov(numerator, denominator, ddof=1)
    variance = float(cov[0, 0] - 2 * ratio * cov[0, 1] + ratio**2 * cov[1, 1]) / (n * mean_den**2)
    half = float(stats.norm.ppf(1 - alpha / 2)) * math.sqrt(max(variance, 0.0))
    return Estimate(ratio, variance, ratio - half, ratio + half)


def proportion_estimate(successes: int, n: int, alpha: float = 0.05) -> Estimate:
    """A share with its binomial variance and Wilson score interval."""
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, math.nan)
    p = successes / n
    z = float(stats.norm.ppf(1 - alpha / 2))
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Estimate(p, p * (1 - p) / n, centre - half, centre + half)


def mean_estimate(values: np.ndarray, alpha: float = 0.05) -> Estimate:
    if len(values) < 2:
        value = float(values.mean()) if len(values) else math.nan
        return Estimate(value, math.nan, math.nan, math.nan)
    mean, variance = float(values.mean()), float(values.var(ddof=1)) / len(values)
    half = float(stats.norm.ppf(1 - alpha / 2)) * math.sqrt(variance)
    return Estimate(mean, variance, mean - half, mean + half)


@dataclass
class Comparison:
    """An arm's metric against the control's: difference, its interval and p-value, and the MDE."""

    difference: float
    relative: float
    low: float
    high: float
    p_value: float
    significant: bool
    mde: float  # absolute, at this sample size and power
    mde_relative: float


def compare(treatment: Estimate, control: Estimate, alpha: float = 0.05, power: float = 0.8) -> Comparison:
    variance = treatment.variance + control.variance  # independent arms
    se = math.sqrt(variance) if variance >= 0 else math.nan  # NaN stays NaN
    diff = treatment.value - control.value
    z_alpha, z_power = float(stats.norm.ppf(1 - alpha / 2)), float(stats.norm.ppf(power))
    if not se > 0:
        return Comparison(diff, math.nan, math.nan, math.nan, math.nan, False, math.nan, math.nan)
    p_value = float(2 * stats.norm.sf(abs(diff) / se))
    mde = (z_alpha + z_power) * se
    relative = diff / control.value if control.value else math.nan
    return Comparison(
        diff,
        relative,
        diff - z_alpha * se,
        diff + z_alpha * se,
        p_value,
        p_value < alpha,
        mde,
        mde / control.value if control.value else math.nan,
    )


def srm_test(shoppers: Mapping[str, int], shares: Mapping[str, float]) -> dict[str, Any]:
    """Chi-square of shoppers per arm against the expected shares (renormalized over ``shoppers``' arms)."""
    arms = [arm for arm in shares if shares[arm] > 0]
    observed = np.array([shoppers.get(arm, 0) for arm in arms], dtype=np.float64)
    total_share = sum(shares[arm] for arm in arms)
    expected = observed.sum() * np.array([shares[arm] / total_share for arm in arms])
    if observed.sum() == 0 or len(arms) < 2:
        return {"chi2": math.nan, "p_value": math.nan, "mismatch": False, "expected": {}, "observed": {}}
    result = stats.chisquare(observed, expected)
    return {
        "chi2": float(result.statistic),
        "p_value": float(result.pvalue),
        "mismatch": bool(result.pvalue < SRM_ALPHA),
        "expected_shares": {arm: shares[arm] / total_share for arm in arms},
        "observed": {arm: int(o) for arm, o in zip(arms, observed)},
    }


def shoppers_needed(
    control: Estimate, shoppers: int, lift: float, proportion: bool, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Shoppers per arm for power ``power`` against a relative ``lift`` of the control's value.

    ``n = (z₁₋α/₂ + z_power)² · (σ_c² + σ_t²) / δ²`` with ``δ = lift · value`` and the per-shopper
    variance ``σ_c² = variance · shoppers`` read off the control; under the alternative a share has
    ``σ_t² = p_t(1 − p_t)``, a ratio or a mean scales with its value (``σ_t = (1 + lift) · σ_c``):
    ignoring the treatment's larger variance would promise 80% power and deliver about 70%.
    """
    if not (lift > 0 and shoppers > 0 and math.isfinite(control.variance) and control.value):
        return math.nan
    unit_variance = control.variance * shoppers
    if proportion:
        treated = min(control.value * (1 + lift), 1.0)
        treated_variance = treated * (1 - treated)
    else:
        treated_variance = unit_variance * (1 + lift) ** 2
    z = float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))
    return float(math.ceil(z * z * (unit_variance + treated_variance) / (lift * control.value) ** 2))


# --------------------------------------------------------------------------- the report


@dataclass
class ArmReport:
    arm: str
    shoppers: int
    exposures: int
    clicks: int
    add_to_carts: int
    purchases: int
    revenue: float
    per_impression: dict[str, Estimate] = field(default_factory=dict)
    per_shopper: dict[str, Estimate] = field(default_factory=dict)
    revenue_per_shopper: Estimate | None = None
    versus_control: dict[str, Comparison] = field(default_factory=dict)
    slots: int = 0
    explored_slots: int = 0
    explored_clicks: int = 0
    #: with explored slots: ``explored_ctr`` (clicks per explored slot) and ``ranked_ctr`` (per slot
    #: ranked by score), each a ratio over shoppers
    per_slot: dict[str, Estimate] = field(default_factory=dict)


def arm_report(table: ShopperTable, arm: str, alpha: float = 0.05) -> ArmReport:
    rows = table.select(arm)
    report = ArmReport(
        arm,
        len(rows.arm),
        int(rows.exposures.sum()),
        int(rows.clicks.sum()),
        int(rows.add_to_carts.sum()),
        int(rows.purchases.sum()),
        float(rows.revenue.sum()),
    )
    for metric, column in RATES.items():
        outcome = getattr(rows, column)
        report.per_impression[metric] = ratio_estimate(outcome, rows.exposures, alpha)
        report.per_shopper[metric] = proportion_estimate(int((outcome > 0).sum()), len(outcome), alpha)
    if rows.revenue.any():
        report.revenue_per_shopper = mean_estimate(rows.revenue, alpha)
    assert rows.slots is not None and rows.explored_slots is not None and rows.explored_clicks is not None
    report.slots, report.explored_slots = int(rows.slots.sum()), int(rows.explored_slots.sum())
    report.explored_clicks = int(rows.explored_clicks.sum())
    if report.explored_slots:
        ranked_clicks, ranked_slots = rows.clicks - rows.explored_clicks, rows.slots - rows.explored_slots
        report.per_slot = {
            "explored_ctr": ratio_estimate(rows.explored_clicks, rows.explored_slots, alpha),
            "ranked_ctr": ratio_estimate(ranked_clicks, ranked_slots, alpha),
        }
    return report


def build_report(
    table: ShopperTable,
    experiment: str,
    control: str | None = None,
    shares: Mapping[str, float] | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    lift: float = 0.05,
    joined: JoinStats | None = None,
) -> dict[str, Any]:
    """Everything ``report.json`` holds: per-arm figures, comparisons with the control, SRM, MDE."""
    arms = sorted(set(table.arm.tolist()), key=lambda a: (a != control, a))
    control = control if control in arms else (arms[0] if arms else None)
    reports = {arm: arm_report(table, arm, alpha) for arm in arms}
    base = reports.get(control) if control is not None else None
    for arm, report in reports.items():
        if base is None or arm == control:
            continue
        for metric in RATES:
            report.versus_control[f"{metric}_per_impression"] = compare(
                report.per_impression[metric], base.per_impression[metric], alpha, power
            )
            report.versus_control[f"{metric}_per_shopper"] = compare(
                report.per_shopper[metric], base.per_shopper[metric], alpha, power
            )
        if report.revenue_per_shopper and base.revenue_per_shopper:
            report.versus_control["revenue_per_shopper"] = compare(
                report.revenue_per_shopper, base.revenue_per_shopper, alpha, power
            )
    shoppers = {arm: r.shoppers for arm, r in reports.items()}
    srm = srm_test(shoppers, shares if shares else dict.fromkeys(arms, 1.0))
    needed = {}
    if base is not None:
        for metric in RATES:
            needed[f"{metric}_per_impression"] = shoppers_needed(
                base.per_impression[metric], base.shoppers, lift, False, alpha, power
            )
            needed[f"{metric}_per_shopper"] = shoppers_needed(
                base.per_shopper[metric], base.shoppers, lift, True, alpha, power
            )
        if base.revenue_per_shopper is not None:
            needed["revenue_per_shopper"] = shoppers_needed(
                base.revenue_per_shopper, base.shoppers, lift, False, alpha, power
            )
    return {
        "experiment": experiment,
        "control": control,
        "alpha": alpha,
        "power": power,
        "target_lift": lift,
        "arms": {arm: _plain(asdict(r)) for arm, r in reports.items()},
        "srm": srm,
        "shoppers_needed_for_target_lift": _plain(needed),
        "join": asdict(joined) if joined else None,
    }


def _plain(value: Any) -> Any:
    """JSON-safe: NaN and inf become None."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def render_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Experiment `{report['experiment']}`",
        "",
        f"Control: `{report['control']}`; alpha {report['alpha']}, power {report['power']}; intervals are "
        f"{100 * (1 - report['alpha']):.0f}% (per impression: delta method over shoppers; per shopper: Wilson).",
        "",
        "| arm | shoppers | exposures | CTR | add-to-cart / exp. | conversion / exp. | clicked shoppers | "
        "converted shoppers | revenue / shopper |",
        "| --- | ---: | ---: | --- | --- | --- | --- | --- | --- |",
    ]
    for arm, r in report["arms"].items():
        imp, shop = r["per_impression"], r["per_shopper"]

        def cell(e: dict[str, Any]) -> str:
            return f"{_pct(e['value'])} [{_pct(e['low'])}, {_pct(e['high'])}]"

        revenue = "–" if not r["revenue_per_shopper"] else f"{r['revenue_per_shopper']['value']:.2f}"
        lines.append(
            f"| {arm} | {r['shoppers']} | {r['exposures']} | {cell(imp['ctr'])} | {cell(imp['add_to_cart_rate'])} | "
            f"{cell(imp['conversion_rate'])} | {cell(shop['ctr'])} | {cell(shop['conversion_rate'])} | {revenue} |"
        )
    lines += [
        "",
        "## Against the control",
        "",
        "| arm | metric | difference | relative | 95% CI | p | MDE (rel.) | shoppers/arm for the target lift |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for arm, r in report["arms"].items():
        for metric, c in r["versus_control"].items():
            needed = report["shoppers_needed_for_target_lift"].get(metric)
            flag = " **significant**" if c["significant"] else ""
            p_value = "–" if c["p_value"] is None else f"{c['p_value']:.4f}{flag}"
            shoppers = "–" if needed is None else f"{needed:,.0f}"
            lines.append(
                f"| {arm} | {metric} | {_pct(c['difference'])} | {_pct(c['relative'])} | "
                f"[{_pct(c['low'])}, {_pct(c['high'])}] | {p_value} | {_pct(c['mde_relative'])} | {shoppers} |"
            )
    explored = {arm: r for arm, r in report["arms"].items() if r.get("per_slot")}
    if explored:
        lines += [
            "",
            "## Explored positions",
            "",
            "Slots an `explore` rule placed, apart from the slots ranked by score (clicks per slot shown).",
            "",
            "| arm | slots | explored slots | clicks on explored | CTR explored slots | CTR ranked slots |",
            "| --- | ---: | ---: | ---: | --- | --- |",
        ]
        for arm, r in explored.items():
            slot = r["per_slot"]
            lines.append(
                f"| {arm} | {r['slots']} | {r['explored_slots']} | {r['explored_clicks']} | "
                f"{_pct(slot['explored_ctr']['value'])} [{_pct(slot['explored_ctr']['low'])}, "
                f"{_pct(slot['explored_ctr']['high'])}] | {_pct(slot['ranked_ctr']['value'])} "
                f"[{_pct(slot['ranked_ctr']['low'])}, {_pct(slot['ranked_ctr']['high'])}] |"
            )
    srm = report["srm"]
    verdict = "**MISMATCH: do not trust the other figures**" if srm["mismatch"] else "no mismatch"
    lines += [
        "",
        "## Sample ratio",
        "",
        f"Shoppers per arm {srm.get('observed')} vs expected shares {srm.get('expected_shares')}: "
        f"chi² {srm['chi2'] if srm['chi2'] is None else round(srm['chi2'], 3)}, p {srm['p_value']} → {verdict} "
        f"(flagged below p {SRM_ALPHA}).",
        "",
        f"Target lift for the sample-size column: {100 * report['target_lift']:.1f}% relative.",
    ]
    if report.get("join"):
        lines += ["", f"Joining: {report['join']}"]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(report["arms"])
    metrics = list(RATES)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.5))
    for ax, metric in zip(axes, metrics):
        values = [report["arms"][a]["per_impression"][metric] for a in arms]
        centre = [100 * (v["value"] or 0) for v in values]
        low = [c - 100 * (v["low"] if v["low"] is not None else v["value"] or 0) for c, v in zip(centre, values)]
        high = [100 * (v["high"] if v["high"] is not None else v["value"] or 0) - c for c, v in zip(centre, values)]
        ax.bar(
            arms,
            centre,
            yerr=[low, high],
            capsize=6,
            color=["#888" if a == report["control"] else "#3a7" for a in arms],
        )
        ax.set_title(f"{metric} per exposure (%)")
    fig.suptitle(f"experiment {report['experiment']} (95% intervals)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(report: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "report.json", out / "report.md", out / "report.png"]
    paths[0].write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    paths[1].write_text(render_markdown(report), encoding="utf-8")
    plot(report, paths[2])
    return paths


def run(
    event_files: Sequence[Path],
    experiment: str,
    out: Path,
    config: Path | None = None,
    window_s: float = DEFAULT_WINDOW_S,
    alpha: float = 0.05,
    power: float = 0.8,
    lift: float = 0.05,
) -> list[Path]:
    """``aisle experiment report``: read, join, compute, write."""
    exp = Experiment.load(config) if config is not None else None
    if exp is not None and exp.name != experiment:
        raise ValueError(f"--config describes experiment {exp.name!r}, not {experiment!r}")
    table, joined = shopper_table(read_events(event_files), experiment, window_s)
    if not len(table.arm):
        raise ValueError(f"no exposures of experiment {experiment!r} in {[str(p) for p in event_files]}")
    report = build_report(
        table,
        experiment,
        exp.control if exp else None,
        exp.shares if exp else None,
        alpha,
        power,
        lift,
        joined,
    )
    return write_report(report, out)
