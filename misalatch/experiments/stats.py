"""Paired statistics of a sweep: a variant against the baseline, seed by seed.

Runs of two variants with the same seed share the data order, the initialisation seed and every
other setting, so the honest comparison is paired: the per-seed differences ``variant − baseline``,
their mean with a 95 % confidence interval from the t distribution (n − 1 degrees of freedom), and
the two-sided paired t-test (``scipy.stats.ttest_rel``). With n ≥ 6 pairs the two-sided Wilcoxon
signed-rank p-value is added as a check that does not assume normal differences; below 6 pairs its
exact p-value cannot go under 0.0625 (2 / 2^5), so it is left out rather than shown as "not
significant" by construction.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np
from scipy import stats as sps

PAIRED_TEST = "paired t-test"
WILCOXON_MIN_PAIRS = 6


@dataclass(frozen=True)
class PairedComparison:
    """``variant − baseline`` over the seeds both have a finite value for."""

    n: int
    seeds: list[int]
    differences: list[float]
    mean: float
    ci95: tuple[float, float]
    p_value: float  # two-sided paired t-test; NaN when n < 2 or the differences are all equal
    wilcoxon_p: Optional[float]  # two-sided Wilcoxon signed-rank, only for n >= 6
    test: str = PAIRED_TEST


def paired_comparison(variant: Mapping[int, float], baseline: Mapping[int, float]) -> PairedComparison:
    """Compare two ``{seed: value}`` maps seed by seed.

    Seeds missing on either side, or with a non-finite value on either side, are left out (and
    n says how many pairs remain). The confidence interval is ``mean ± t(0.975, n−1) · sd / √n``
    with the sample sd (ddof = 1); for a single pair it is ``(NaN, NaN)``.
    """
    seeds = sorted(s for s in variant if s in baseline
                   and math.isfinite(float(variant[s])) and math.isfinite(float(baseline[s])))
    diffs = np.array([float(variant[s]) - float(baseline[s]) for s in seeds], dtype=np.float64)
    n = int(diffs.size)
    if n == 0:
        nan = float("nan")
        return PairedComparison(0, [], [], nan, (nan, nan), nan, None)
    mean = float(diffs.mean())
    if n < 2:
        return PairedComparison(n, seeds, diffs.tolist(), mean, (float("nan"), float("nan")), float("nan"), None)
    sd = float(diffs.std(ddof=1))
    half = float(sps.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # identical differences: scipy warns and returns NaN, as documented
        p = float(sps.ttest_rel([float(variant[s]) for s in seeds], [float(baseline[s]) for s in seeds]).pvalue)
        wilcoxon = None
        if n >= WILCOXON_MIN_PAIRS:
            wilcoxon = float(sps.wilcoxon(diffs).pvalue) if np.any(diffs != 0) else float("nan")
    return PairedComparison(n, seeds, diffs.tolist(), mean, (mean - half, mean + half), p, wilcoxon)

