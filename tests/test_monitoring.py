"""Watching a run: the samples/s and ETA arithmetic (a fake clock), the
loader-wait share, the down-weighted samples panel and the progress bars.
The log lines and TensorBoard tags of a real run are checked in
test_end_to_end.py (test_cli_trains_then_resumes_from_the_saved_step)."""

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alip_jax import downweighted, mesh as mesh_lib, monitoring, progress


class FakeClock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def run_step(timing, clock, waiting, computing):
  with timing.waiting():
    clock.now += waiting
  clock.now += computing


def test_rates_and_eta_count_training_time_since_warm_up_only():
  clock = FakeClock()
  timing = monitoring.StepClock(total_steps=100, batch_size=8, clock=clock)
  clock.now = 50.0  # compile + step 1
  timing.warmed_up(1)
  assert timing.report(1) == {}  # no step since warm-up yet
  run_step(timing, clock, waiting=0.5, computing=1.5)  # step 2
  first = timing.report(2)
  assert first["step_s"] == pytest.approx(2.0) and first["samples_per_s"] == pytest.approx(4.0)
  assert first["eta_s"] == pytest.approx(98 * 2.0)
  assert first["loader_wait"] == pytest.approx(0.25)
  run_step(timing, clock, waiting=0.0, computing=2.0)  # step 3
  with timing.paused():  # its evaluation and checkpoint: 30 s
    clock.now += 30.0
  run_step(timing, clock, waiting=1.0, computing=1.0)  # step 4
  second = timing.report(4)
  # 36 s since warm-up, 30 of them paused: 6 s for 3 steps.
  assert second["step_s"] == pytest.approx(2.0) and second["samples_per_s"] == pytest.approx(4.0)
  assert second["eta_s"] == pytest.approx(96 * 2.0)
  # Since the last report: 4 s of training for 2 steps, 1 s of it waiting.
  assert second["samples_per_s_interval"] == pytest.approx(4.0)
  assert second["loader_wait"] == pytest.approx(0.25)


def test_nothing_is_reported_before_warm_up():
  timing = monitoring.StepClock(total_steps=10, batch_size=8, clock=FakeClock())
  assert timing.report(3) == {}


def test_eta_format():
  assert monitoring.format_eta(3725) == "01:02:05"
  assert monitoring.format_eta(3 * 86400) == "72 h"


class Terminal(io.StringIO):
  def isatty(self):
    return True


@pytest.mark.parametrize("stream,environment,shown", [
    (Terminal, {}, True), (io.StringIO, {}, False), (Terminal, {"TQDM_DISABLE": "1"}, False)])
def test_progress_bars_draw_only_on_a_terminal_unless_disabled(monkeypatch, stream, environment,
                                                               shown):
  err = stream()
  monkeypatch.setattr("sys.stderr", err)
  monkeypatch.delenv("TQDM_DISABLE", raising=False)
  for name, value in environment.items():
    monkeypatch.setenv(name, value)
  assert list(progress.bar(range(3), desc="counting")) == [0, 1, 2]
  assert ("counting" in err.getvalue()) == shown
  with progress.bar(total=2, desc="by hand", disable=True) as bar:
    bar.update(2)
  assert "by hand" not in err.getvalue()


def gate_metrics(weight_sample, weight_raw_pair=None):
  n = len(weight_sample)
  ones = np.ones(n, np.float32)
  metrics = {"weight_sample": np.asarray(weight_sample, np.float32),
             "weight_raw_pair": np.asarray(weight_raw_pair if weight_raw_pair is not None
                                           else ones, np.float32),
             "weight_caption_pair": ones,
             **{name: np.linspace(-1, 1, n, dtype=np.float32)
                for name in downweighted.SIMILARITIES}}
  return {k: jnp.asarray(v) for k, v in metrics.items()}


def token_batch(n, offset=0):
  raw = np.zeros((n, 4), np.int32)
  raw[:, 1] = np.arange(n) + offset
  return {"raw_tokens": jnp.asarray(raw), "caption_tokens": jnp.asarray(raw + [0, 100, 0, 0])}


class DigitTokenizer:
  def decode(self, tokens):
    return " ".join(str(int(t)) for t in tokens if t)


def test_the_least_weighted_samples_are_picked_by_their_share_of_the_loss():
  # weight = W^s·(W^t + W^c)/2: row 1 0.6·(0.2 + 1)/2 = 0.36, then row 2 0.5·(1 + 1)/2.
  metrics = gate_metrics([1.0, 0.6, 0.5, 0.9], weight_raw_pair=[1.0, 0.2, 1.0, 1.0])
  lowest = downweighted.lowest_weighted(metrics, token_batch(4), k=2)
  np.testing.assert_array_equal(lowest["lowest/row"], [1, 2])
  np.testing.assert_allclose(lowest["lowest/weight"], [0.36, 0.5], rtol=1e-6)
  np.testing.assert_array_equal(lowest["lowest/raw_tokens"][:, 1], [1, 2])
  assert downweighted.lowest_weighted(metrics, token_batch(4), k=0) == {}
  no_gates = {"infonce_raw": metrics["s_tc"]}  # CLIP, SigLIP, …
  assert downweighted.lowest_weighted(no_gates, token_batch(4), k=2) == {}


def test_the_panel_lists_the_lowest_of_the_whole_interval_with_keys_and_texts():
  panel = downweighted.Panel(DigitTokenizer(), n=3)
  step = jax.jit(lambda m, b: downweighted.lowest_weighted(m, b, 2))
  panel.add(1, step(gate_metrics([0.9, 0.3, 1.0, 0.8]), token_batch(4, offset=10)),
            np.array(["a0", "a1", "a2", "a3"]))
  panel.add(2, step(gate_metrics([0.2, 1.0, 0.7, 1.0]), token_batch(4, offset=20)),
            np.array(["b0", "b1", "b2", "b3"]))
  table = panel.render().splitlines()
  assert len(table) == 2 + 3
  # Lowest first: b0 (0.2), a1 (0.3), b2 (0.7); a3 (0.8) does not make it.
  for line, (weight, step_number, key, raw) in zip(
      table[2:], [("0.200", 2, "b0", "20"), ("0.300", 1, "a1", "11"), ("0.700", 2, "b2", "22")]):
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[0] == weight and cells[7] == str(step_number) and cells[8] == key
    assert cells[9] == raw and cells[10] == str(int(raw) + 100)  # raw text, caption
  assert panel.render() == ""  # the interval was consumed


def test_local_rows_follow_the_batch_sharding(monkeypatch):
  mesh = mesh_lib.make_mesh(dict(data=-1))
  np.testing.assert_array_equal(
      downweighted.local_rows(mesh_lib.batch_sharding(mesh), 16), np.arange(16))
  # One process holds every row; two processes must each get only theirs.
  # A layout as a 2-host data axis gives it: 4 devices, process 1 holds
  # rows 4:8 and 12:16 (listed out of order, as a device map may be).
  device = lambda p: type("Device", (), {"process_index": p})()  # noqa: E731
  spans = {device(0): (0, 4), device(1): (12, 16), device(0): (8, 12), device(1): (4, 8)}

  class TwoHostSharding:
    def devices_indices_map(self, shape):
      assert shape == (16,)
      return {d: (slice(*span),) for d, span in spans.items()}

  monkeypatch.setattr(jax, "process_index", lambda: 1)
  np.testing.assert_array_equal(downweighted.local_rows(TwoHostSharding(), 16),
                                [4, 5, 6, 7, 12, 13, 14, 15])
