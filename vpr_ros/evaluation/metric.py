"""Metric relocalization quality: translation error of accepted estimates and 2-sigma coverage.

Coverage asks whether the published covariance is honest: the fraction of estimates whose
true position lies inside their own "2 sigma" region. In one dimension that region is
|error| <= 2 sigma, which holds 95.45 % of a Gaussian; in k dimensions (k = 2 for x y, 3 for
x y z) the region with the same probability is the ellipsoid
error^T Sigma^-1 error <= chi2_k(0.9545) (4.00, 6.18, 8.03 for k = 1, 2, 3). A well calibrated
covariance gives a coverage near 0.95; much less means over-confident, near 1 means too loose.

Positions may be metres, or an along-track "place index" (Gardens Point has no metric
ground truth, but its frames are evenly spaced): `unit` only changes the labels.
"""
import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence

import numpy as np

COVERAGE_PROBABILITY = math.erf(2.0 / math.sqrt(2.0))
"""P(|N(0, 1)| <= 2) = 0.9545: the probability of the 1-D 2-sigma interval."""

THRESHOLDS = (1.0, 2.0, 5.0, 10.0)
UNITS = {"m": ("m", "m"), "place": ("place", "places")}
AXES = {"x": (0,), "xy": (0, 1), "xyz": (0, 1, 2)}


def _chi2_cdf(x: float, dof: int) -> float:
    if dof == 1:
        return math.erf(math.sqrt(x / 2.0))
    if dof == 2:
        return 1.0 - math.exp(-x / 2.0)
    if dof == 3:
        return math.erf(math.sqrt(x / 2.0)) - math.sqrt(2.0 * x / math.pi) * math.exp(-x / 2.0)
    raise ValueError(f"chi-square quantiles are implemented for 1 to 3 dimensions, got {dof}")


def chi2_quantile(probability: float, dof: int) -> float:
    """x with P(chi2_dof <= x) = probability, for dof 1..3 (bisection on the closed-form CDF)."""
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {probability}")
    lo, hi = 0.0, 100.0
    _chi2_cdf(hi, dof)  # validates dof
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _chi2_cdf(mid, dof) < probability else (lo, mid)
    return 0.5 * (lo + hi)


@dataclass
class MetricReport:
    """Translation errors of `count` estimates; coverage over the `with_covariance` of them."""

    unit: str
    axes: str
    count: int
    median_error: Optional[float]
    within: Dict[float, float] = field(default_factory=dict)
    with_covariance: int = 0
    coverage_2sigma: Optional[float] = None
    chi2_2sigma: float = 0.0

    def to_dict(self) -> dict:
        """JSON-safe dict; `within` keyed by threshold as text (e.g. "1", "2.5")."""
        return {"unit": self.unit, "axes": self.axes, "count": self.count,
                "median_error": self.median_error,
                "within": {f"{t:g}": f for t, f in self.within.items()},
                "with_covariance": self.with_covariance, "coverage_2sigma": self.coverage_2sigma,
                "coverage_region": f"chi2 {len(self.axes)} dof <= {self.chi2_2sigma:.3f} "
                                   f"(P = {COVERAGE_PROBABILITY:.4f})"}

    def summary(self) -> str:
        """One line for people."""
        one, many = UNITS[self.unit]
        label = "place index" if self.unit == "place" else "metres"
        if not self.count:
            return f"translation error ({label}, {self.axes}): no accepted estimate with a true position"
        within = "/".join(f"{self.within[t]:.2f}" for t in self.within)
        thresholds = "/".join(f"{t:g}" for t in self.within)
        coverage = (f"2-sigma coverage {self.coverage_2sigma:.2f} of {self.with_covariance} with a covariance"
                    if self.with_covariance else "no covariance published, no 2-sigma coverage")
        return (f"translation error ({label}, {self.axes}) of {self.count} accepted: median "
                f"{self.median_error:.2f} {many if self.median_error != 1 else one}; within "
                f"{thresholds} {many}: {within}; {coverage}")


def evaluate_positions(estimated: Sequence[Sequence[float]], truth: Sequence[Sequence[float]],
                       covariances: Sequence[Optional[Sequence[Sequence[float]]]], *,
                       axes: str = "xyz", unit: str = "m",
                       thresholds: Sequence[float] = THRESHOLDS) -> MetricReport:
    """Errors of estimated positions (N, >= 3) against true ones, on the chosen `axes`.

    `covariances[i]` is the estimate's 6x6 pose covariance (ROS order) or 3x3 position
    covariance, or None when none was published (left out of the coverage). A covariance that
    is not positive definite on the axes counts as not covering the truth.
    """
    if axes not in AXES:
        raise ValueError(f"axes must be one of {', '.join(AXES)}, got {axes!r}")
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
    index = list(AXES[axes])
    if not len(estimated) == len(truth) == len(covariances):
        raise ValueError(f"{len(estimated)} estimates, {len(truth)} true positions and {len(covariances)} "
                         f"covariances: one of each per relocalization")
    errors = np.zeros((0, len(index)))
    if len(estimated):
        errors = (np.asarray(estimated, dtype=np.float64).reshape(len(estimated), -1)[:, index]
                  - np.asarray(truth, dtype=np.float64).reshape(len(truth), -1)[:, index])
    distance = np.linalg.norm(errors, axis=1)
    chi2 = chi2_quantile(COVERAGE_PROBABILITY, len(index))
    inside = []
    for error, covariance in zip(errors, covariances):
        if covariance is None:
            continue
        block = np.asarray(covariance, dtype=np.float64)[np.ix_(index, index)]
        try:
            root = np.linalg.cholesky(block)
        except np.linalg.LinAlgError:
            inside.append(False)
            continue
        whitened = np.linalg.solve(root, error)
        inside.append(float(whitened @ whitened) <= chi2)
    return MetricReport(
        unit=unit, axes=axes, count=len(distance),
        median_error=float(np.median(distance)) if len(distance) else None,
        within={float(t): float(np.mean(distance <= t)) for t in thresholds} if len(distance) else {},
        with_covariance=len(inside),
        coverage_2sigma=float(np.mean(inside)) if inside else None, chi2_2sigma=chi2)
