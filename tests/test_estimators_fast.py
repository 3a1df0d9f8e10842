"""event_table's packed-key counting gives exactly the lexsort counting."""

from __future__ import annotations

import numpy as np
import pytest

from funnelstats import _estimators as E

FIELDS = ("group", "time", "at_risk", "events", "censored", "offsets", "totals")


def _both(d, c, **kw):
    fast = E.event_table(d, c, **kw)
    keep = E._packed_counts
    E._packed_counts = lambda *a: None
    try:
        slow = E.event_table(d, c, **kw)
    finally:
        E._packed_counts = keep
    return fast, slow


@pytest.mark.parametrize(
    ("n", "groups", "causes", "span"),
    [(2000, 3, 2, 40), (5000, 1, 1, 3), (20000, 7, 3, 10**16), (7, 4, 2, 2), (1, 1, 1, 1)],
)
def test_packed_counts_equal_lexsort_counts(n, groups, causes, span):
    rng = np.random.default_rng(n)
    d = rng.integers(0, span, n)
    g = rng.integers(0, groups, n)
    c = rng.integers(0, causes + 1, n)
    assert E._packed_counts(d, g, c, groups, causes) is not None
    fast, slow = _both(d, c, groups=g, n_groups=groups, n_causes=causes)
    for f in FIELDS:
        a, b = getattr(fast, f), getattr(slow, f)
        assert a.dtype == b.dtype, f
        np.testing.assert_array_equal(a, b, err_msg=f)


def test_empty_groups_and_declines():
    d = np.array([5, 5, 9, 1])
    c = np.array([1, 0, 2, 1])
    g = np.array([0, 0, 3, 3])  # groups 1 and 2 are empty
    fast, slow = _both(d, c, groups=g, n_groups=5, n_causes=2)
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(fast, f), getattr(slow, f), err_msg=f)
    # float durations, negative durations and values past 63 bits keep the lexsort path
    assert E._packed_counts(d.astype(float), g, c, 5, 2) is None
    assert E._packed_counts(d - 6, g, c, 5, 2) is None
    assert E._packed_counts(np.array([2**62, 1]), np.array([1, 0]), np.array([1, 1]), 2, 1) is None
