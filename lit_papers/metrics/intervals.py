"""95 % intervals shared by every paper: how a card's ``± x`` is computed where the unit is a handful of runs.

Per-item and per-episode means use the normal approximation (:mod:`lit_papers.metrics.fewshot`); a mean over a
few seeds or repeats uses Student's t with n - 1 degrees of freedom (:func:`t_half_width`), since 1.96 would
understate it badly at n = 3 (t = 4.30).
"""

from __future__ import annotations

import math
import statistics


def t_half_width(values: list[float]) -> float | None:
    """Half-width of the 95 % Student-t interval of the mean of ``values`` (None for fewer than 2)."""
    if len(values) < 2:
        return None
    from scipy.stats import t  # scipy comes with scikit-learn

    return float(t.ppf(0.975, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))
