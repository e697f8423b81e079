"""The Student-t half-width every seed-averaged card row uses, against printed t-table values."""

import math

import pytest

from lit_papers.metrics.intervals import t_half_width


def test_t_half_width_against_the_t_table():
    # [1, 2, 3]: mean 2, sample std 1; t(0.975, 2 dof) = 4.302653 (printed tables)
    assert t_half_width([1.0, 2.0, 3.0]) == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    # 12 values 0..11: sample std sqrt(13); t(0.975, 11 dof) = 2.200985, not the normal 1.96
    assert t_half_width([float(v) for v in range(12)]) == pytest.approx(2.200985 * math.sqrt(13 / 12), rel=1e-6)
    assert t_half_width([5.0]) is None and t_half_width([]) is None
    assert t_half_width([2.0, 2.0, 2.0]) == 0.0
