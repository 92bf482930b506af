"""The trainer, top to bottom: mesh → run directory → input → state and step →
resume → evaluators → loop → result.

The pieces live beside it: the model and the train state (state.py), the
step (step.py), checkpoints and preemption (checkpointing/), evaluators
(evaluation/evaluators.py), logging (monitoring.py). Everything that
touches a batch works on the *global* batch, so 1 device and 8 devices give
the same numbers.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import jax
import ml_collections
import numpy as np

from alip_jax import (checkpointing, config_check, fileio, losses, mesh as mesh_lib, monitoring,
                      phase_times, rundir, state as state_lib, step as step_lib)
from alip_jax.checkpointing import lease
from alip_jax.data import pipeline, records
from alip_jax.evaluation import evaluators as evaluators_lib

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainResult:
  """What a run returns: numbers only. The trained model is in the workdir
  (`alip_jax.load(workdir)`)."""
  step: int  # the step the run stopped at
  eval: dict  # the final evaluation's metrics; {} when stopped before the end
  preempted: bool
  gates: dict  # the gates' running means {"h_tc", "h_xt", "h_xc"} at `step`
  skipped: dict  # bad training records skipped, by reason
  # Wall, CPU and page faults per phase (phase_times.TrainPhases), for
  # `python -m alip_jax.demo`'s breakdown and docs/BENCHMARKS.md.
  phases: dict = dataclasses.field(default_factory=dict)


def itstime(step: int, every: int, total: int, at_total: bool = True) -> bool:
  """Whether a periodic action runs after `step`: every `every` steps (0:
  never) and, if `at_total`, after the last one."""
  if step == total:
    return at_total
  return bool(every) and step % every == 0


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop_after: int | None = None, break_lease: bool = False) -> TrainResult:
  """Trains (resuming from `workdir` if it holds checkpoints) and evaluates.

  `stop_after` ends this run after that step with a checkpoint and no final
  evaluation, as a preemption would; re-running resumes from there.
  `break_lease` breaks a stale writer lease on `workdir` (checkpointing/lease.py).

  The data must exist: with `config.data.synthetic`, the caller builds the
  embedded corpus first (`tools.synthetic.prepare(config, workdir)`, as
  `alip_jax.main` and the demo do); the trainer only reads it.
  """
  started = phase_times.usage_now()
  config = config_check.validate(config)  # defaults filled in, typos stop here
  # One writer per workdir, taken before anything there is read or written.
  with lease.take(workdir, "train", break_lease):
    mesh = mesh_lib.make_mesh(config.mesh)
    # The mesh in context: the chunked losses' shard_map runs over it.
    with jax.set_mesh(mesh):
      return _train_and_evaluate(config, workdir, mesh, stop_after, started)


def _train_and_evaluate(config, workdir, mesh, stop_after, started) -> TrainResult:
  is_main = jax.process_index() == 0

  # ---- Batch geometry.
  local_batch = mesh_lib.check_batch_size(config.train.batch_size, mesh, jax.process_count())
  if config.eval.batch_size % mesh_lib.batch_size_divisor(mesh):
    raise mesh_lib.BatchSizeError(
        f"config.eval.batch_size={config.eval.batch_size} is not divisible by the batch axes "
        f"data × fsdp = {mesh_lib.batch_size_divisor(mesh)}.")
  batch_sharding = mesh_lib.batch_sharding(mesh)
  log.info("mesh %s, global batch %d (%d per process)", dict(mesh.shape),
           config.train.batch_size, local_batch)

  # ---- The run directory (rundir.py): a resume may not change what the
  # saved state means; compared before anything is written.
  saved_steps = rundir.saved_steps(workdir)
  config_changes = rundir.check_resume(config, workdir, saved_steps)

  # ---- Input (built beforehand: the embedded corpus by tools.synthetic.prepare).
  data_dir = rundir.data_dir(config, workdir)
  train_files = records.split_files(data_dir, config.data.train_split).files  # none: says how
  model, tokenizer = state_lib.make_model_and_tokenizer(config, data_dir)
  used_tokenizer = getattr(tokenizer, "tokenizer_json", None) or tokenizer.model_path
  rundir.check_tokenizer(workdir, used_tokenizer, saved_steps)
  bad_records = pipeline.BadRecordCounter()
  train_source = records.ShardedSource(train_files,
                                      config.data.skip_bad_shards)
  # Global batches already on the devices, made by a thread while the step runs.
  train_iter = iter(pipeline.device_prefetch(pipeline.train_dataset(
      train_source, tokenizer,
      config.data.image_size, local_batch, config.seed, bad_records,
      num_threads=config.data.num_threads, prefetch=config.data.prefetch,
      num_views=losses.get(config.loss).num_views, color_jitter=config.data.color_jitter,
      max_pixels=config.data.max_pixels,
      workers=config.data.workers), batch_sharding,
      config.data.device_prefetch))

  # ---- Model, optimiser, state (a plain pytree, sharded by logical rules), step.
  spec = state_lib.state_spec(model, config, mesh)
  train_step = step_lib.jit_train_step(model, config, spec, mesh)
  num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(spec.abstract["params"]))
  log.info("model: %.2fM parameters", num_params / 1e6)

  # ---- Resume or initialise.
  manager = checkpointing.make_manager(
      rundir.checkpoint_dir(workdir), config.train.keep_checkpoints,
      config.train.keep_every, config.train.async_checkpoints)
  state = checkpointing.restore_latest(manager, spec.abstract, train_iter,
                                      config.train.restore_fallback)
  if state is None:
    state = _initial_state(config, spec)
    log.info("initialised a new run in %s", workdir)
  else:
    log.info("resumed from step %d in %s", int(state["step"]), workdir)
  # Written only now that the saved state has matched this config's shapes
  # (a workdir whose config.json was lost says nothing before that).
  if is_main:
    fileio.makedirs(workdir)
    rundir.record(config, workdir, config_changes, saved_steps)
    rundir.keep_tokenizer(workdir, used_tokenizer, saved_steps)
  first_step = int(state["step"])

  # ---- Evaluators (their data read once) and the log they write.
  encoders = evaluators_lib.padded_encoders(model, mesh, spec.sharding["params"], tokenizer)
  evaluators = evaluators_lib.from_config(config, encoders, data_dir, tokenizer)
  monitor = monitoring.Monitor(
      config, workdir, first_step, config.train.batch_size * monitoring.flops_per_sample(config),
      is_main, tokenizer, batch_sharding)
  eval_log = rundir.EvalLog(workdir, monitor, is_main)

  # ---- The loop.
  total = config.train.steps
  last_step = total if stop_after is None else min(stop_after, total)
  max_skips = config.train.max_consecutive_skips
  preemption = checkpointing.PreemptionNotice()
  saves = checkpointing.SaveWatcher(manager)
  preempted = False
  monitor.phases.add("start-up", phase_times.usage_now() - started)
  try:
    for step in range(first_step + 1, last_step + 1):
      saves.check(step - 1)  # a failed async save stops the run here, not a save later
      monitor.before_step(step)
      with monitor.waiting_for_data():
        batch = next(train_iter)
      keys = batch.pop("key")  # host strings, for the down-weighted panel
      state, summary = train_step(state, batch)
      monitor.after_step(step, summary, keys)

      if itstime(step, config.train.log_every, total):
        summary = jax.device_get(summary)
        if summary["consecutive_skips"] >= max_skips:
          manager.wait_until_finished()
          raise checkpointing.diverged_error(manager, step, int(summary["consecutive_skips"]),
                                             summary["loss"])
        if summary["skipped_steps"] > 0 and not np.isfinite(summary["loss"]):
          log.warning("step %d: non-finite loss, update skipped (%d skipped so far)", step,
                      int(summary["skipped_steps"]))
        monitor.write(step, summary, {
            "skipped_records": bad_records.total,
            # Samples trained on / training records (skipped ones not counted).
            "epoch": step * config.train.batch_size / len(train_source)})
      if preemption.requested(manager, step):
        # SIGTERM (TPU VM maintenance, SLURM time limit): save this step, stop.
        checkpointing.save_unless_diverging(saves, step, state, train_iter)
        log.warning("preempted: saved step %d in %s; re-run the same command to resume", step,
                    workdir)
        preempted = True
        break
      # Checkpoints and evaluations are not in samples/s and ETA.
      if itstime(step, config.train.checkpoint_every, last_step):
        with monitor.paused("checkpoint"):
          checkpointing.save_unless_diverging(saves, step, state, train_iter)
      if itstime(step, config.train.eval_every, total, at_total=False):  # the end: below
        with monitor.paused("eval"):
          eval_log.write(step, evaluators_lib.run_all(evaluators, state["params"]))
  except BaseException:
    train_iter.close()  # stops Grain worker processes, if any
    raise
  finally:  # also on errors: give SIGTERM back to its previous handler
    preemption.close()

  # ---- The end: a final evaluation when the run is complete.
  monitor.phases.loop_done()
  final = {}
  if last_step == total and not preempted:
    with monitor.phases.measure("eval"):
      final = eval_log.write(total, evaluators_lib.run_all(evaluators, state["params"]))
  with monitor.phases.measure("end"):
    saves.check(last_step, wait=True)
    manager.close()
    train_iter.close()  # stops Grain worker processes, if any
    monitor.close()
  if bad_records.total:
    log.warning("skipped %d bad training records: %s", bad_records.total,
                dict(bad_records.counts))
  return TrainResult(
      step=int(state["step"]), eval=final, preempted=preempted,
      gates={k: float(v) for k, v in jax.device_get(state["gates"]).items()},
      skipped=dict(bad_records.counts), phases=monitor.phases.as_dict())


def _initial_state(config, spec: state_lib.StateSpec) -> dict:
  """A fresh state from `config.seed`; with `config.init_from`, its params
  replaced by the imported ones."""
  state = spec.initialise(jax.random.key(config.seed))
  if config.init_from:
    # Adam's moments start at zero whatever the params: only they change.
    # Host arrays (every process reads the file) go to their shardings;
    # leaves the checkpoint lacks keep their fresh on-device values.
    state["params"] = jax.tree.map(
        lambda x, s: x if isinstance(x, jax.Array) else jax.device_put(x, s),
        state_lib.imported_params(config, state["params"]), spec.sharding["params"])
    log.info("initialised from %s", config.init_from)
  return state

