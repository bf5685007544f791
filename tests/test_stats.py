import math

import pytest

from harness import stats


def test_summary_of_known_samples():
    s = stats.summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    assert s["min"] == 1.0 and s["max"] == 5.0 and s["median"] == 3.0
    assert s["q1"] == 2.0 and s["q3"] == 4.0 and s["iqr"] == 2.0
    assert s["mean"] == 3.0
    assert s["stdev"] == pytest.approx(math.sqrt(2.5))
    assert s["cv"] == pytest.approx(math.sqrt(2.5) / 3.0)


def test_single_sample_has_no_spread():
    s = stats.summarize([0.25])
    assert s["median"] == s["min"] == s["q1"] == s["q3"] == 0.25
    assert s["stdev"] == 0.0 and stats.spread_warnings([0.25]) == []


def test_empty_samples_raise():
    with pytest.raises(ValueError):
        stats.summarize([])


def test_tight_samples_carry_no_warning():
    assert stats.spread_warnings([1.0, 1.01, 0.99, 1.0, 1.005]) == []


def test_wide_samples_are_flagged():
    warnings = stats.spread_warnings([1.0, 1.5, 0.7, 1.2, 2.0])
    assert any("stdev" in w for w in warnings)
    assert any("IQR" in w for w in warnings)


def test_resolution_and_steal_warnings():
    assert stats.resolution_warning(5e-7, 1e-9) is not None  # 500 ticks, 1000 needed
    assert stats.resolution_warning(1e-3, 1e-9) is None
    assert "steal" in stats.steal_warning(0.05)
    assert stats.steal_warning(0.001) is None and stats.steal_warning(None) is None
