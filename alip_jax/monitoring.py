"""Seeing the run: one progress line, metrics.jsonl, TensorBoard, profiles.

At start-up the console says when the train step compiles and how long that
took, then how long step 1 took. Every `train.log_every` steps (the only
host sync of the loop besides step 1) the trainer hands the step's summary
here: the console gets step/total, loss per path, lr, logit scale, gate
weights and running means, samples/s and MFU averaged since step 1, the share
of step time spent waiting for the loader, and ETA (evaluation and checkpoint
time left out of all of them: see StepClock); `metrics.jsonl` and
TensorBoard (`<workdir>/tensorboard`, through tensorboardX, no TensorFlow)
get every scalar, TensorBoard a histogram of each per-sample gate weight and
similarity (S_tc, S_xt, S_xc) and a text panel of the interval's most
down-weighted samples (alip_jax/downweighted.py). `train.profile_steps = 'A,B'` writes a
`jax.profiler` trace of steps A..B to `<workdir>/profile`. With
`config.wandb.project` set and `wandb` installed, Weights & Biases gets the
same scalars; its run id is kept in `<workdir>/wandb_run.json`, so a resumed
run continues the same W&B run.

The workdir may be a bucket (gs://…): see alip_jax.fileio.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import secrets
import tempfile
import time

import jax
import numpy as np

from alip_jax import accelerators, downweighted, fileio, losses, phase_times, rundir
from alip_jax.models import zoo

log = logging.getLogger(__name__)

# Dense bf16 peak per device, TFLOP/s (config.train.peak_tflops overrides);
# TPUs from the chip table (exact device kinds: v5p's is 'TPU v5').
KNOWN_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
PATH_KEYS = ("loss_", "infonce_", "weight_", "h_", "softclip_", "uniclip_")
# Rows of the TensorBoard panel of down-weighted samples (train.log_down_weighted).
DOWN_WEIGHTED_ROWS = 16


def peak_tflops(override: float = 0.0) -> float:
  """`override` if set, else the known peak of this accelerator, else 0."""
  if override:
    return float(override)
  kind = jax.devices()[0].device_kind
  if accelerators.tpu_chip(kind):
    return float(accelerators.tpu_chip(kind).peak_tflops)
  return next((v for k, v in KNOWN_PEAK_TFLOPS.items() if k in kind), 0.0)


def flops_per_sample(config) -> float:
  """Analytic train FLOPs per sample of this run's objective: the image tower
  once per view (UniCLIP: 2) and the text tower once per text the loss embeds
  (ALIP: raw + caption; clip/siglip/softclip: `loss.path`; mix: one). The
  trainer's MFU and the benchmarks' use this one count."""
  objective = losses.get(config.loss)
  return zoo.model_flops(config.model, config.data.image_size, config.data.context_length,
                         len(objective.text_names), images_per_sample=objective.num_views)


class StepClock:
  """Step time, samples/s and ETA averaged over the steps since warm-up (the
  first step of the run: compilation), and the share of the last log
  interval spent waiting for the loader. Time inside `paused()` (evaluation,
  checkpointing) counts in none of them, so the ETA is that of the training
  steps left. `clock` is injectable for tests."""

  def __init__(self, total_steps: int, batch_size: int, clock=time.perf_counter):
    self.total, self.batch_size, self.clock = total_steps, batch_size, clock
    self.paused_s = self.wait_s = 0.0  # running totals
    self.warm = None  # (step, time, paused_s) at warm-up
    self.last = None  # (step, time, paused_s, wait_s) at the last report

  def paused(self):
    """Around evaluation and checkpointing."""
    return self._adding_time_to("paused_s")

  def waiting(self):
    """Around fetching the next batch."""
    return self._adding_time_to("wait_s")

  @contextlib.contextmanager
  def _adding_time_to(self, total: str):
    start = self.clock()
    try:
      yield
    finally:
      setattr(self, total, getattr(self, total) + self.clock() - start)

  def warmed_up(self, step: int) -> None:
    now = self.clock()
    self.warm = (step, now, self.paused_s)
    self.last = (step, now, self.paused_s, self.wait_s)

  def report(self, step: int) -> dict:
    """{} until a step after warm-up has run; else step_s, samples_per_s and
    eta_s since warm-up, and samples_per_s_interval and loader_wait (a
    fraction of the interval) since the last report."""
    if self.warm is None or step <= self.warm[0]:
      return {}
    now = self.clock()
    warm_step, warm_time, warm_paused = self.warm
    step_s = ((now - warm_time) - (self.paused_s - warm_paused)) / (step - warm_step)
    last_step, last_time, last_paused, last_wait = self.last
    interval = max((now - last_time) - (self.paused_s - last_paused), 1e-9)
    self.last = (step, now, self.paused_s, self.wait_s)
    return {"step_s": step_s, "samples_per_s": self.batch_size / max(step_s, 1e-9),
            "eta_s": (self.total - step) * step_s,
            "samples_per_s_interval": (step - last_step) * self.batch_size / interval,
            "loader_wait": (self.wait_s - last_wait) / interval}


def format_eta(seconds: float) -> str:
  return (time.strftime("%H:%M:%S", time.gmtime(seconds)) if seconds < 86400
          else f"{seconds / 3600:.0f} h")


class Monitor:
  def __init__(self, config, workdir: str, first_step: int, flops_per_step: float,
               is_main: bool, tokenizer=None, batch_sharding=None):
    self.config, self.workdir, self.is_main = config, workdir, is_main
    self.total = config.train.steps
    self.flops_per_step = flops_per_step
    self.peak = peak_tflops(config.train.peak_tflops) * 1e12 * jax.device_count()
    self.first_step = first_step
    self.clock = StepClock(self.total, config.train.batch_size)
    self.phases = phase_times.TrainPhases()  # the trainer adds start-up and end
    self.started, self.batch_ready = self.clock.clock(), None
    self.panel = downweighted.Panel(
        tokenizer, config.train.log_down_weighted if is_main else 0,
        batch_sharding)
    self.jsonl = fileio.open_for_append(rundir.metrics_file(workdir)) if is_main else None
    self.tensorboard = None
    self.wandb = None
    if is_main:
      try:
        from tensorboardX import SummaryWriter
        fileio.route_tensorboard_to_buckets()
        self.tensorboard = SummaryWriter(rundir.tensorboard_dir(workdir))
      except ImportError:
        log.warning("tensorboardX is not installed: no TensorBoard events")
      if config.wandb.project:
        self.wandb = start_wandb(config, workdir)
    window = config.train.profile_steps
    self.profile = tuple(int(s) for s in window.split(",")) if window else None
    self.profiling = False
    self.profile_dir = rundir.profile_dir(workdir)

  def before_step(self, step: int) -> None:
    if step == self.first_step + 1:
      self.phases.loop_started()
    if self.profile and step == self.profile[0] and self.is_main:
      # The profiler writes local files; a bucket workdir gets them copied.
      self.trace_dir = (tempfile.mkdtemp(prefix="alip_profile_")
                        if fileio.is_remote(self.workdir) else self.profile_dir)
      jax.profiler.start_trace(self.trace_dir)
      self.profiling = True

  @contextlib.contextmanager
  def waiting_for_data(self):
    """Around fetching the next batch: loader wait, and the start-up lines."""
    with self.clock.waiting(), self.phases.measure("loader wait"):
      yield
    if self.batch_ready is None:
      self.batch_ready = self.clock.clock()
      log.info("first batch in %.1f s; compiling the train step…",
               self.batch_ready - self.started)

  @contextlib.contextmanager
  def paused(self, phase: str):
    """Around evaluation and checkpointing (`phase`): left out of samples/s
    and ETA."""
    with self.clock.paused(), self.phases.measure(phase):
      yield

  def after_step(self, step: int, summary, keys=None) -> None:
    """`keys`: the sample keys of this process's part of the batch (for the
    down-weighted panel)."""
    if step == self.first_step + 1:
      self._first_step_done(step, summary)
    self.panel.add(step, summary, keys)
    if self.profiling and step == self.profile[1]:
      jax.block_until_ready(summary)
      self._stop_profile()
      log.info("profile of steps %d..%d in %s", *self.profile, self.profile_dir)

  def _first_step_done(self, step: int, summary) -> None:
    # jit traces and compiles inside the call and only then dispatches.
    compiled = self.clock.clock()
    self.batch_ready = self.batch_ready or self.started
    log.info("compiled the train step in %.1f s", compiled - self.batch_ready)
    loss = float(jax.device_get(summary["loss"]))  # waits for the step to run
    done = self.clock.clock()
    self.phases.first_step_done()
    log.info("step %d/%d done %.1f s after start-up (first batch %.1f s, compile %.1f s, "
             "run %.1f s), loss %.4f", step, self.total, done - self.started,
             self.batch_ready - self.started, compiled - self.batch_ready, done - compiled, loss)
    self.clock.warmed_up(step)

  def _stop_profile(self) -> None:
    jax.profiler.stop_trace()
    self.profiling = False
    if self.trace_dir != self.profile_dir:
      fileio.copy_tree(self.trace_dir, self.profile_dir)

  def write(self, step: int, summary: dict, extra: dict) -> dict:
    """summary: the step's device summary, fetched; returns the scalars logged."""
    # A skipped (non-finite) step's values are NaN: histogram the finite ones.
    histograms = {k: np.asarray(v)[np.isfinite(v)] for k, v in summary.items()
                  if k.startswith("hist_")}
    histograms = {k: v for k, v in histograms.items() if v.size}
    scalars = {k: float(v) for k, v in summary.items() if np.ndim(v) == 0}
    scalars.update(extra)
    timing = self.clock.report(step)
    eta = timing.pop("eta_s", None)
    scalars.update(timing)
    if self.peak and "step_s" in scalars:
      scalars["mfu"] = self.flops_per_step / scalars["step_s"] / self.peak
    speed = "warming up"
    if timing:
      mfu = f" MFU {100 * scalars['mfu']:.1f}%" if "mfu" in scalars else ""
      speed = (f"{scalars['samples_per_s']:.0f} samples/s{mfu} | loader wait "
               f"{100 * scalars['loader_wait']:.0f}% | ETA {format_eta(eta)}")
    log.info("step %d/%d loss %.4f (%s) scale %.2f lr %.2e | %s",
             step, self.total, scalars["loss"],
             " ".join(f"{k}={v:.3f}" for k, v in scalars.items() if k.startswith(PATH_KEYS)),
             math.exp(scalars["logit_scale"]), scalars["lr"], speed)
    panel = self.panel.render()
    if self.jsonl:
      self.jsonl.write((json.dumps({"step": step, **scalars}) + "\n").encode())
      self.jsonl.flush()
    if self.tensorboard:
      for k, v in scalars.items():
        self.tensorboard.add_scalar(f"train/{k}", v, step)
      for k, v in histograms.items():
        self.tensorboard.add_histogram(f"gates/{k}", v, step)
      if panel:
        self.tensorboard.add_text("gates/down_weighted", panel, step)
      self.tensorboard.flush()
    if self.wandb:
      import wandb
      self.wandb.log({**{f"train/{k}": v for k, v in scalars.items()},
                      **{f"gates/{k}": wandb.Histogram(v)
                         for k, v in histograms.items()}}, step=step)
    return scalars

  def write_eval(self, step: int, metrics: dict) -> None:
    if self.tensorboard:
      for k, v in metrics.items():
        if isinstance(v, (int, float)):
          self.tensorboard.add_scalar(f"eval/{k}", v, step)
      self.tensorboard.flush()
    if self.wandb:
      self.wandb.log({f"eval/{k}": v for k, v in metrics.items()
                      if isinstance(v, (int, float))}, step=step)

  def close(self) -> None:
    if self.profiling:
      self._stop_profile()
    if self.jsonl:
      self.jsonl.close()
    if self.tensorboard:
      self.tensorboard.close()
    if self.wandb:
      self.wandb.finish()


def start_wandb(config, workdir: str):
  """A W&B run for this workdir (the same one again after a resume), or None
  when wandb is not installed."""
  try:
    import wandb
  except ImportError:
    log.warning("config.wandb.project is set but wandb is not installed "
                "(pip install 'alip-jax[cloud]'): no W&B logging")
    return None
  id_file = rundir.wandb_run_file(workdir)
  run_id = fileio.read_json(id_file, {}).get("id") or secrets.token_hex(4)
  run = wandb.init(project=config.wandb.project, entity=config.wandb.entity or None,
                   name=config.wandb.name or None, mode=config.wandb.mode or None,
                   id=run_id, resume="allow", dir=config.wandb.dir or None,
                   config=config.to_dict())
  fileio.write_json(id_file, {"id": run_id})
  return run
