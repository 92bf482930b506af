"""Seeing the run: one progress line, metrics.jsonl, TensorBoard, profiles.

Every `train.log_every` steps (the only host sync of the loop) the trainer
hands the step's summary here: the console gets step/total, loss per path,
lr, logit scale, gate weights and running means, samples/s, MFU and ETA;
`metrics.jsonl` and TensorBoard (`<workdir>/tensorboard`, through
tensorboardX, no TensorFlow) get every scalar, and TensorBoard a histogram of
each per-sample gate weight. `train.profile_steps = 'A,B'` writes a
`jax.profiler` trace of steps A..B to `<workdir>/profile`. With
`config.wandb.project` set and `wandb` installed, Weights & Biases gets the
same scalars; its run id is kept in `<workdir>/wandb_run.json`, so a resumed
run continues the same W&B run.

The workdir may be a bucket (gs://…): see alip_jax.fileio.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import tempfile
import time

import jax
import numpy as np

from alip_jax import accelerators, fileio
from alip_jax.models import zoo

log = logging.getLogger(__name__)

# Dense bf16 peak per device, TFLOP/s (config.train.peak_tflops overrides);
# TPUs from the chip table (exact device kinds: v5p's is 'TPU v5').
KNOWN_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
PATH_KEYS = ("loss_", "infonce_", "weight_", "h_", "softclip_", "uniclip_")


def peak_tflops(override: float = 0.0) -> float:
  """`override` if set, else the known peak of this accelerator, else 0."""
  if override:
    return float(override)
  kind = jax.devices()[0].device_kind
  if accelerators.tpu_chip(kind):
    return float(accelerators.tpu_chip(kind).peak_tflops)
  return next((v for k, v in KNOWN_PEAK_TFLOPS.items() if k in kind), 0.0)


def flops_per_sample(config, texts_per_sample: int, images_per_sample: int) -> float:
  return zoo.model_flops(config.model, config.data.image_size, config.data.context_length,
                         texts_per_sample, images_per_sample=images_per_sample)


class Monitor:
  def __init__(self, config, workdir: str, first_step: int, flops_per_step: float,
               is_main: bool):
    self.config, self.workdir, self.is_main = config, workdir, is_main
    self.total = config.train.steps
    self.flops_per_step = flops_per_step
    self.peak = peak_tflops(config.train.get("peak_tflops", 0.0)) * 1e12 * jax.device_count()
    self.last_time, self.last_step = time.time(), first_step
    self.jsonl = fileio.open_for_append(fileio.join(workdir, "metrics.jsonl")) if is_main else None
    self.tensorboard = None
    self.wandb = None
    if is_main:
      try:
        from tensorboardX import SummaryWriter
        fileio.route_tensorboard_to_buckets()
        self.tensorboard = SummaryWriter(fileio.join(workdir, "tensorboard"))
      except ImportError:
        log.warning("tensorboardX is not installed: no TensorBoard events")
      if config.get("wandb") and config.wandb.project:
        self.wandb = start_wandb(config, workdir)
    window = config.train.get("profile_steps", "")
    self.profile = tuple(int(s) for s in window.split(",")) if window else None
    self.profiling = False
    self.profile_dir = fileio.join(workdir, "profile")

  def before_step(self, step: int) -> None:
    if self.profile and step == self.profile[0] and self.is_main:
      # The profiler writes local files; a bucket workdir gets them copied.
      self.trace_dir = (tempfile.mkdtemp(prefix="alip_profile_")
                        if fileio.is_remote(self.workdir) else self.profile_dir)
      jax.profiler.start_trace(self.trace_dir)
      self.profiling = True

  def after_step(self, step: int, summary) -> None:
    if self.profiling and step == self.profile[1]:
      jax.block_until_ready(summary)
      self._stop_profile()
      log.info("profile of steps %d..%d in %s", *self.profile, self.profile_dir)

  def _stop_profile(self) -> None:
    jax.profiler.stop_trace()
    self.profiling = False
    if self.trace_dir != self.profile_dir:
      fileio.copy_tree(self.trace_dir, self.profile_dir)

  def write(self, step: int, summary: dict, extra: dict) -> dict:
    """summary: the step's device summary, fetched; returns the scalars logged."""
    now = time.time()
    elapsed = max(now - self.last_time, 1e-9)
    steps_done = step - self.last_step
    self.last_time, self.last_step = now, step
    histograms = {k: np.asarray(v) for k, v in summary.items() if np.ndim(v) > 0}
    scalars = {k: float(v) for k, v in summary.items() if np.ndim(v) == 0}
    scalars.update(extra)
    scalars["samples_per_s"] = steps_done * self.config.train.batch_size / elapsed
    scalars["step_s"] = elapsed / max(steps_done, 1)
    if self.peak:
      scalars["mfu"] = self.flops_per_step / scalars["step_s"] / self.peak
    eta = (self.total - step) * scalars["step_s"]
    log.info("step %d/%d loss %.4f (%s) scale %.2f lr %.2e | %.0f samples/s%s | ETA %s",
             step, self.total, scalars["loss"],
             " ".join(f"{k}={v:.3f}" for k, v in scalars.items() if k.startswith(PATH_KEYS)),
             math.exp(scalars["logit_scale"]), scalars["lr"], scalars["samples_per_s"],
             f" MFU {100 * scalars['mfu']:.1f}%" if "mfu" in scalars else "",
             time.strftime("%H:%M:%S", time.gmtime(eta)) if eta < 86400 else f"{eta / 3600:.0f} h")
    if self.jsonl:
      self.jsonl.write((json.dumps({"step": step, **scalars}) + "\n").encode())
      self.jsonl.flush()
    if self.tensorboard:
      for k, v in scalars.items():
        self.tensorboard.add_scalar(f"train/{k}", v, step)
      for k, v in histograms.items():
        self.tensorboard.add_histogram(f"gates/{k}", v, step)
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
                "(pip install -r requirements-cloud.txt): no W&B logging")
    return None
  id_file = fileio.join(workdir, "wandb_run.json")
  run_id = fileio.read_json(id_file, {}).get("id") or secrets.token_hex(4)
  run = wandb.init(project=config.wandb.project, entity=config.wandb.get("entity") or None,
                   name=config.wandb.get("name") or None, mode=config.wandb.get("mode") or None,
                   id=run_id, resume="allow", dir=config.wandb.get("dir") or None,
                   config=config.to_dict())
  fileio.write_json(id_file, {"id": run_id})
  return run
