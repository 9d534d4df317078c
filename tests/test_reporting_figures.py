"""The report figures (core/reporting/figures.py): intervals beside chance, the chance CMC, the attention colour scale."""
from __future__ import annotations

import numpy as np
import pytest

from core.reporting import figures


def test_bars_figure_shows_intervals_beside_chance_on_an_axis_that_fits_them():
    label = "Baseline + TL + STA + Fusion + Reg"
    fig = figures.bars_figure(["Baseline", label], ["R1", "mAP"],
                              {"R1": [(2.0, 1.0, 3.0), (5.0, 4.0, 6.5)], "mAP": [(1.0, 0.5, 1.5), (1.2, float("nan"),
                                                                                                float("nan"))]},
                              "this run (synthetic, MARS layout)", "t", chance={"R1": 0.22, "mAP": 0.8})
    r1, ap = fig.axes[:2]
    lo, hi = r1.get_xlim()
    assert 0 <= lo <= 0.22 and 6.5 <= hi < 8                     # holds every interval and chance, not 0-100
    segments = sorted(tuple(np.round(s[:, 0], 6)) for s in r1.collections[0].get_segments())
    assert segments == [(1.0, 3.0), (4.0, 6.5)]                  # whiskers = the intervals the tables print
    assert [(t.get_text(), t.get_position()[1]) for t in r1.get_yticklabels()] == [("Baseline", 1), (label, 0)]
    # full labels, the first row at the top
    assert r1.get_legend() is None and fig.legends               # the legend is the figure's, below the panels
    chance = [ln for ln in r1.get_lines() if ln.get_label() == figures.CHANCE_LABEL]
    assert chance and chance[0].get_xdata()[0] == 0.22
    assert ap.get_xlim()[1] < 2                                   # each panel its own span
    # the paper's values (real datasets) are drawn as well and widen the axis to hold them
    fig = figures.bars_figure(["A"], ["R1"], {"R1": [(70.0, 65.0, 75.0)]}, "this run (MARS)", "t",
                              paper={"R1": [80.8]}, paper_name="paper (MARS)")
    assert 62 < fig.axes[0].get_xlim()[0] < 65 and 80.8 < fig.axes[0].get_xlim()[1] <= 100
    figures.close(fig)


def test_cmc_figure_draws_the_chance_cmc():
    chance = np.linspace(1, 20, 20)
    fig = figures.cmc_figure({"A": np.linspace(10, 60, 20)}, "t", chance)
    line = next(ln for ln in fig.axes[0].get_lines() if ln.get_label() == figures.CHANCE_LABEL)
    np.testing.assert_array_equal(line.get_ydata(), chance)
    figures.close(fig)


def test_attention_colour_scale_is_fixed_around_one_over_n():
    norm = figures.attention_norm(4)
    assert (norm(0.0), norm(0.25), norm(0.5), norm(0.9)) == pytest.approx((0.0, 0.5, 1.0, 1.0))
    assert norm(0.26) == pytest.approx(0.52)                      # a 0.01 deviation stays next to white
    fig = figures.attention_figure([{"query": 0, "pid": 1, "camid": 1, "frames": [],
                                     "scores": [[0.26, 0.24], [0.24, 0.26], [0.25, 0.25], [0.25, 0.25]]}], "t")
    assert "fixed scale (N = 4: 1/N = 0.25, 2/N = 0.5)" in fig._suptitle.get_text()
    figures.close(fig)
