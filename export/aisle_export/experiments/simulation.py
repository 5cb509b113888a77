"""Simulated shoppers with a hidden click model, to check ``aisle experiment report``'s statistics.

Each shopper has a hidden click propensity drawn from a Beta distribution (mean ``ctr``, so
shoppers differ: the per-impression outcomes of one shopper are correlated, which is what makes a
naive binomial test over impressions too eager), sees ``1 + Poisson(mean_exposures − 1)`` pages,
clicks each with their propensity × the arm's lift, adds a clicked item to the cart with
probability ``p_cart`` and buys an added item with ``p_buy`` at a log-normal price. Shoppers are
assigned to arms by ``aisle_contract.experiments`` (BLAKE2b of a salt and the id), as in serving.

``aa_false_positive_rate`` runs many A/A experiments and counts how often the report calls a
difference; ``ab_detection_rate`` runs A/B experiments with a known lift at a given size. Both
``tests/unit/test_experiment_report.py`` and ``perf/sim_experiments.py`` use them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from aisle_contract.experiments import Arm, Experiment
from aisle_export.experiments.report import ShopperTable, build_report

PRIMARY = "ctr_per_impression"


@dataclass(frozen=True)
class ClickModel:
    ctr: float = 0.05
    concentration: float = 20.0  # Beta(a, b) with a + b = concentration: smaller = shoppers differ more
    mean_exposures: float = 4.0
    p_cart: float = 0.3
    p_buy: float = 0.5
    price_mu: float = 3.0
    price_sigma: float = 0.6


def simulate(
    rng: np.random.Generator,
    shoppers: int,
    lifts: Mapping[str, float],
    model: ClickModel = ClickModel(),
    salt: str = "sim",
) -> ShopperTable:
    """One experiment's shopper table; ``lifts`` maps arm → multiplier of the click propensity (equal shares)."""
    names = list(lifts)
    experiment = Experiment("sim", salt, [Arm(name, 1.0 / len(names)) for name in names])
    arm = np.array([experiment.arm_of(f"s{i}") for i in range(shoppers)], dtype=object)
    a = model.ctr * model.concentration
    propensity = rng.beta(a, model.concentration - a, size=shoppers)
    lift = np.array([lifts[name] for name in arm], dtype=np.float64)
    exposures = 1 + rng.poisson(model.mean_exposures - 1, size=shoppers)
    clicks = rng.binomial(exposures, np.minimum(1.0, propensity * lift))
    carts = rng.binomial(clicks, model.p_cart)
    purchases = rng.binomial(carts, model.p_buy)
    prices = rng.lognormal(model.price_mu, model.price_sigma, int(purchases.sum()))
    revenue = np.bincount(np.repeat(np.arange(shoppers), purchases), weights=prices, minlength=shoppers)
    as_float = [np.asarray(x, dtype=np.float64) for x in (exposures, clicks, carts, purchases)]
    return ShopperTable(arm, *as_float, revenue)


def called(table: ShopperTable, metric: str = PRIMARY, lift: float = 0.05) -> tuple[bool, dict]:
    """Whether the report calls ``treatment`` different from ``control`` on ``metric``, and the report."""
    report = build_report(table, "sim", control="control", lift=lift)
    comparison = report["arms"]["treatment"]["versus_control"][metric]
    return bool(comparison["significant"]), report


def aa_false_positive_rate(
    runs: int, shoppers: int, seed: int = 0, metric: str = PRIMARY, model: ClickModel = ClickModel()
) -> tuple[float, list[float]]:
    """Share of ``runs`` A/A experiments (no difference) where the report calls one; and their p-values."""
    rng = np.random.default_rng(seed)
    hits, p_values = 0, []
    for run in range(runs):
        table = simulate(rng, shoppers, {"control": 1.0, "treatment": 1.0}, model, salt=f"aa-{seed}-{run}")
        significant, report = called(table, metric)
        hits += significant
        p_values.append(report["arms"]["treatment"]["versus_control"][metric]["p_value"])
    return hits / runs, p_values


def needed_shoppers(
    lift: float, pilot_shoppers: int, seed: int = 0, metric: str = PRIMARY, model: ClickModel = ClickModel()
) -> int:
    """Shoppers per arm the report says a relative ``lift`` needs, read off one A/A pilot's report."""
    rng = np.random.default_rng(seed)
    table = simulate(rng, pilot_shoppers, {"control": 1.0, "treatment": 1.0}, model, salt=f"pilot-{seed}")
    _, report = called(table, metric, lift)
    return int(report["shoppers_needed_for_target_lift"][metric])


def ab_detection_rate(
    runs: int,
    shoppers_per_arm: int,
    lift: float,
    seed: int = 1,
    metric: str = PRIMARY,
    model: ClickModel = ClickModel(),
) -> float:
    """Share of ``runs`` A/B experiments with a true relative ``lift`` where the report calls it (positive)."""
    rng = np.random.default_rng(seed)
    hits = 0
    for run in range(runs):
        table = simulate(
            rng, 2 * shoppers_per_arm, {"control": 1.0, "treatment": 1.0 + lift}, model, f"ab-{seed}-{run}"
        )
        significant, report = called(table, metric, lift)
        hits += significant and report["arms"]["treatment"]["versus_control"][metric]["difference"] > 0
    return hits / runs
