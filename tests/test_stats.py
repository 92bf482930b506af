"""The experiments' interval code on data whose answer is known."""

import numpy as np
import pytest

from alip_jax.experiments import stats


def test_a_constant_difference_has_a_zero_width_interval():
  a = np.random.default_rng(0).normal(size=(3, 500))
  got = stats.bootstrap(a + 0.25, a)
  assert got.mean == pytest.approx(0.25) and got.low == pytest.approx(0.25)
  assert got.high == pytest.approx(0.25) and got.resolved


def test_width_matches_the_pigeonhole_bootstrap_for_independent_cells():
  # iid N(μ, σ²) over S·Q cells. Resampling seeds and queries both counts the
  # cells' own noise twice over (Owen 2007, "the pigeonhole bootstrap"): the
  # interval's variance is (2 − 1/S)·σ²/(S·Q), conservative by at most √2 in
  # width against the exact 1.96·σ/√(S·Q).
  rng = np.random.default_rng(1)
  sigma, s, q = 2.0, 5, 4000
  got = stats.bootstrap(rng.normal(0.3, sigma, size=(s, q)), resamples=4000)
  half_width = (got.high - got.low) / 2
  assert half_width == pytest.approx(1.96 * sigma * np.sqrt((2 - 1 / s) / (s * q)), rel=0.1)
  assert got.low < 0.3 < got.high


def test_a_seed_effect_widens_the_interval():
  # d[s, q] = μ + u_s + e: with a seed effect σ_u the mean's spread is ≈ σ_u/√S,
  # far above the query term, and the bootstrap must carry it.
  rng = np.random.default_rng(2)
  s, q = 8, 2000
  seed_effect = rng.normal(0, 1.0, size=(s, 1))
  got = stats.bootstrap(0.1 + seed_effect + rng.normal(0, 0.1, size=(s, q)), resamples=4000)
  half_width = (got.high - got.low) / 2
  # Bootstrap over S values: variance ≈ (S−1)/S · sample variance / S.
  expected = 1.96 * np.std(seed_effect, ddof=0) / np.sqrt(s)
  assert half_width == pytest.approx(expected, rel=0.25)
  assert not got.resolved  # μ = 0.1 is lost in the seed spread


def test_pairing_cancels_what_two_rows_share():
  # Per-query difficulty (σ = 1) is shared by both rows; their difference is
  # 0.05 ± 0.05 per query. Paired, the difference is resolved; resampling the
  # rows independently would drown it in the difficulty's spread.
  rng = np.random.default_rng(3)
  difficulty = rng.normal(0, 1, size=(1, 3000)).repeat(3, axis=0)
  b = difficulty
  a = difficulty + 0.05 + rng.normal(0, 0.05, size=difficulty.shape)
  got = stats.bootstrap(a, b)
  assert got.resolved and got.low > 0.04 and got.high < 0.06
  unpaired_a, unpaired_b = stats.bootstrap(a), stats.bootstrap(b)
  assert unpaired_a.high - unpaired_a.low > 10 * (got.high - got.low)


def test_coverage_is_at_least_the_nominal_level():
  # 200 experiments with a known mean: the 95 % interval holds it at least
  # ~95 % of the time (more, as it is conservative; see above).
  rng = np.random.default_rng(4)
  hits = 0
  for i in range(200):
    data = rng.exponential(1.0, size=(4, 300))
    got = stats.bootstrap(data, resamples=500, seed=i)
    hits += got.low <= 1.0 <= got.high
  assert hits / 200 >= 0.93


def test_shapes_are_checked():
  with pytest.raises(ValueError, match="same seeds"):
    stats.bootstrap(np.zeros((3, 10)), np.zeros((2, 10)))
  with pytest.raises(ValueError, match="seeds, queries"):
    stats.bootstrap(np.zeros(10))


def test_per_query_metrics():
  got = stats.per_query_metrics(np.array([[0, 3, 7, 20]]))
  assert got["R@1"].tolist() == [[True, False, False, False]]
  assert got["R@5"].tolist() == [[True, True, False, False]]
  assert got["R@10"].tolist() == [[True, True, True, False]]
  assert got["mean_rank"].tolist() == [[1, 4, 8, 21]]
