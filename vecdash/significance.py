"""Is the difference between two rankings over the same labeled queries more than noise?

A paired randomisation (sign-flip permutation) test over the queries: under "no difference",
each query's difference b - a is as likely to have either sign, so the observed mean difference
is compared with the mean under every (or 20,000 random) sign flips, two-sided. Exact (all 2^n
flips) up to 16 queries. The 95% interval of the mean difference is a paired bootstrap
(percentile, queries resampled), and the smallest detectable difference is the one a paired
test at 5% would find 80% of the time given the spread of the per-query differences.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from vecdash.errors import InvalidInput

ALPHA = 0.05
RESAMPLES = 20_000
EXACT_UP_TO = 16  # queries: 2^16 sign patterns
_Z_ALPHA, _Z_POWER = 1.959964, 0.841621  # two-sided 5%, 80% power


@dataclass(frozen=True)
class PairedTest:
    measure: str
    queries: int
    mean_a: float
    mean_b: float
    mean_difference: float  # b - a
    p_value: float
    ci_low: float
    ci_high: float
    detectable: float  # the smallest true difference this query set detects 80% of the time
    exact: bool

    @property
    def method(self) -> str:
        how = "all sign flips" if self.exact else f"{RESAMPLES:,} random sign flips"
        return (f"paired randomisation test over {self.queries} queries ({how}, two-sided); "
                f"95% interval: paired bootstrap of the mean difference ({RESAMPLES:,} "
                "resamples)")

    @property
    def distinguishable(self) -> bool:
        return self.p_value < ALPHA

    def sentence(self, a: str = "a", b: str = "b") -> str:
        """The verdict in plain words."""
        m, d = self.measure, self.mean_difference
        interval = f"95% interval {self.ci_low:+.4f} to {self.ci_high:+.4f}, p = {self.p_value:.3g}"
        if abs(d) < 1e-12 and self.ci_low == self.ci_high == 0.0:
            return (f"{a} and {b} score the same {m} on every one of the {self.queries} "
                    "queries: there is no difference to test.")
        if self.distinguishable:
            better, worse = (b, a) if d > 0 else (a, b)
            return (f"{better} beats {worse} by {abs(d):.4f} {m} ({interval}): a difference "
                    f"this large is unlikely to be noise over these {self.queries} queries.")
        borderline = (" The test and the interval disagree at the edge (the interval just misses "
                      "0): treat it as unclear." if self.ci_low > 0 or self.ci_high < 0 else "")
        return (f"The difference of {d:+.4f} {m} ({b} minus {a}; {interval}) is not "
                f"distinguishable from noise with these {self.queries} queries.{borderline} "
                f"This set detects differences of about {self.detectable:.4f} and larger; "
                "label more queries to see smaller ones.")


def paired_test(a: np.ndarray, b: np.ndarray, *, measure: str = "nDCG@10",
                seed: int = 0) -> PairedTest:
    """The paired test of ``b`` against ``a`` (one score per query each, same order)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise InvalidInput(f"The two rankings were scored on different queries ({a.shape} vs "
                           f"{b.shape}); compare them on the same labeled queries.")
    n = len(a)
    if n < 2:
        raise InvalidInput(f"A paired test needs at least 2 labeled queries; there are {n}.")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InvalidInput("Some per-query scores are not numbers; run the labeled queries again.")
    d = b - a
    observed = abs(d.mean())
    rng = np.random.default_rng(seed)
    exact = n <= EXACT_UP_TO
    if exact:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        flipped = np.abs(signs @ d) / n
        # Tolerance: equal sums can differ in the last bits after flipping.
        p = float(np.mean(flipped >= observed - 1e-12))
    else:
        signs = rng.choice((-1.0, 1.0), size=(RESAMPLES, n))
        flipped = np.abs(signs @ d) / n
        p = float((1 + np.sum(flipped >= observed - 1e-12)) / (RESAMPLES + 1))
    boot = d[rng.integers(0, n, size=(RESAMPLES, n))].mean(axis=1)
    low, high = (float(x) for x in np.percentile(boot, [2.5, 97.5]))
    spread = float(d.std(ddof=1))
    return PairedTest(measure, n, float(a.mean()), float(b.mean()), float(d.mean()),
                      min(p, 1.0), low, high, (_Z_ALPHA + _Z_POWER) * spread / np.sqrt(n), exact)
