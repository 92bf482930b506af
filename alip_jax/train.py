"""The trainer, top to bottom: mesh → data → model/state → step → resume → loop.

Everything that touches a batch works on the *global* batch: the loss is
written as if on one device and `jax.jit` with NamedShardings lets XLA split
it over the mesh, so 1 device and 8 devices give the same numbers.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from alip_jax import (accumulation, checkpointing, downweighted, fileio, hub, losses,
                      mesh as mesh_lib, monitoring, optim)
from alip_jax.data import pipeline, records
from alip_jax.checkpointing import run_config
from alip_jax import config_check
from alip_jax.data.tokenizer import SOT_ID, EOT_ID, HFTokenizer, Tokenizer
from alip_jax.evaluation import retrieval, tasks as eval_tasks
from alip_jax.models import clip_weights, transformer, two_towers
from alip_jax.models import open_clip_format
from alip_jax.tools import synthetic

log = logging.getLogger(__name__)


def setup_logging():
  """Our INFO lines on stderr; libraries (Orbax is chatty) at WARNING."""
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("alip_jax").setLevel(logging.INFO)


def make_model_and_tokenizer(config, data_dir):
  """The model, and the tokenizer `tokenizer_file` picks."""
  path = tokenizer_file(config, data_dir)
  if path.endswith(".json"):
    tokenizer = HFTokenizer(path, config.data.context_length)
  else:
    tokenizer = Tokenizer(path, config.data.context_length)
  model = two_towers.from_config(config.model, tokenizer.vocab_size, config.data.context_length,
                                eot_id=getattr(tokenizer, "eot_id", EOT_ID),
                                **losses.get(config.loss).model_heads)
  return model, tokenizer


def tokenizer_file(config, data_dir) -> str:
  """`config.data.tokenizer` when set; else the tokenizer of the weights the
  run starts from (`init_from='hf:DIR'`, 'open_clip:DIR', 'hf-hub:…': DIR's
  tokenizer file, which must exist; `'workdir:W'`: W's copy); else the data's
  tokenizer.model."""
  from alip_jax import loading
  explicit = config.data.get("tokenizer", "")
  if explicit:
    return explicit
  init_kind, init_path = hub.resolve_init_from(config.get("init_from", ""))
  if init_kind in ("hf", "open_clip", "workdir"):
    found = loading.find_tokenizer(init_path)
    if found is None:
      raise FileNotFoundError(
          f"init_from={config.init_from!r}: {init_path} holds no tokenizer "
          f"({' or '.join(loading.TOKENIZER_FILES)}), and the data's tokenizer.model is not "
          f"the one these weights were trained with (the same vocabulary size would hide the "
          f"mismatch). Copy the model's tokenizer file into {init_path}, or set "
          f"--config.data.tokenizer=FILE if you mean another one.")
    return found
  return os.path.join(data_dir, "tokenizer.model")


def init_params(model, config, rng):
  """Parameters with their logical axis names (`nn.LogicallyPartitioned`
  boxes); `nn.unbox` gives the plain arrays the train state holds."""
  image_size, length = config.data.image_size, config.data.context_length
  images = jnp.zeros((1, image_size, image_size, 3), jnp.uint8)
  tokens = jnp.zeros((1, length), jnp.int32).at[:, :2].set(jnp.array([SOT_ID, EOT_ID]))
  return model.init(rng, images, {"raw": tokens})["params"]


def make_train_step(model, config, tx):
  """The pure update: (state, global batch) → (state, scalar summary)."""
  lr_schedule = optim.schedule(config.optim, config.train.steps)
  accum_steps = config.train.get("accum_steps", 1)
  objective = losses.get(config.loss)

  def train_step(state, batch):
    # Per-step randomness (caption mixing) from the seed and the step alone,
    # so it does not depend on the mesh and repeats exactly after a resume.
    rng = jax.random.fold_in(jax.random.key(config.seed), state["step"])
    images, aug, texts = objective.inputs(batch, rng)

    def embed(params, inputs):
      return model.apply({"params": params}, inputs["images"], inputs["texts"],
                         inputs["aug"])[0]

    def loss_from_embeddings(embeddings, params):
      logit_params = {k: params[k] for k in two_towers.LOGIT_PARAMS if k in params}
      loss, gates, metrics = objective.loss(embeddings, logit_params, state["gates"])
      return loss, (gates, metrics)

    inputs = {"images": images, "texts": texts, "aug": aug}
    if accum_steps > 1:  # GradCache: the loss still sees the whole global batch
      (loss, (gates, metrics)), grads = accumulation.value_and_grad(
          embed, loss_from_embeddings, state["params"], inputs, accum_steps)
    else:
      (loss, (gates, metrics)), grads = jax.value_and_grad(
          lambda p: loss_from_embeddings(embed(p, inputs), p), has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    # As open_clip / official ALIP: clamp logit scales to [0, ln 100].
    params = {**params, **{k: jnp.clip(params[k], 0.0, two_towers.LOGIT_SCALE_MAX)
                           for k in ("logit_scale", "domain_log_scale") if k in params}}
    # A non-finite loss or gradient skips the update: params, optimiser and
    # gates stay as they were; the step (= batches consumed) still advances.
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    skips = {"total": state["skips"]["total"] + (~finite).astype(jnp.int32),
             "consecutive": jnp.where(finite, 0, state["skips"]["consecutive"] + 1)}
    new_state = {"step": state["step"] + 1, "params": keep(params, state["params"]),
                 "opt": keep(opt_state, state["opt"]), "gates": keep(gates, state["gates"]),
                 "skips": skips}
    summary = {"loss": loss, "grad_norm": grad_norm, "skipped_steps": skips["total"],
               "consecutive_skips": skips["consecutive"],
               **{k: params[k] for k in ("logit_scale", "logit_bias") if k in params},
               "lr": lr_schedule(state["step"]),
               **{k: jnp.mean(v) for k, v in metrics.items()}, **new_state["gates"],
               # Per-sample gate weights and similarities, for TensorBoard histograms.
               **{f"hist_{k}": v for k, v in metrics.items() if k.startswith(("weight_", "s_"))},
               **downweighted.lowest_weighted(metrics, batch, config.train.get(
                   "log_down_weighted", monitoring.DOWN_WEIGHTED_ROWS))}
    return new_state, summary

  return train_step


def imported_params(config, fresh_params):
  """`config.init_from` = 'hf:DIR' (HF CLIPModel), 'open_clip:DIR' (open_clip
  model directory), 'hf-hub:ORG/NAME' (either, from the Hugging Face Hub),
  'openai:FILE' (OpenAI / open_clip state dict or TorchScript archive) or
  'workdir:W' (one of our training workdirs, its newest readable checkpoint)
  → `fresh_params` with every tower weight replaced by the imported one, as
  a host array. The config's towers must match the checkpoint's (an error
  names both); heads the checkpoint has no place for (a SigLIP bias,
  UniCLIP's augmentation MLP) keep their fresh value and are listed.
  `config.init_strict=False` deliberately loads a part: what is skipped is
  printed."""
  strict = config.get("init_strict", True)
  kind, path = hub.resolve_init_from(config.init_from)
  if kind == "hf":
    imported, model_cfg, _ = clip_weights.load_hf(path, strict=strict)
  elif kind == "open_clip":
    imported, model_cfg, _ = open_clip_format.load(path)
  elif kind == "openai":
    imported, model_cfg, _ = clip_weights.load_openai(path, act=config.model.act, strict=strict)
  elif kind == "workdir":
    from alip_jax import loading
    loaded = loading.load(path)
    imported, model_cfg = jax.device_get(loaded.params), loaded.model_config
    if model_cfg.get("scan", False):
      imported = transformer.unstack_layers(imported)
  else:
    raise ValueError(f"config.init_from must be 'hf:DIR', 'open_clip:DIR', 'hf-hub:ORG/NAME', "
                     f"'openai:FILE' or 'workdir:W', got {config.init_from!r}")
  check_towers_match(config, model_cfg, config.init_from)
  if config.model.get("scan", False):
    imported = transformer.stack_layers(imported)
  fresh = jax.tree_util.tree_flatten_with_path(fresh_params)[0]
  imported_flat = {jax.tree_util.keystr(k): v
                   for k, v in jax.tree_util.tree_flatten_with_path(imported)[0]}
  leaves, kept = [], []
  for key_path, value in fresh:
    key = jax.tree_util.keystr(key_path)
    new = imported_flat.pop(key, None)
    if new is not None and tuple(new.shape) != tuple(value.shape):
      raise ValueError(f"init_from {path}: {key} has shape {tuple(new.shape)} there but "
                       f"{tuple(value.shape)} in this config; make config.model match the "
                       f"checkpoint (towers {dict(model_cfg.image)}, {dict(model_cfg.text)}, "
                       f"embed_dim {model_cfg.embed_dim}) and data.context_length")
    if new is None:
      kept.append(key)
    leaves.append(np.asarray(new, np.float32) if new is not None else value)
  unfilled_towers = [k for k in kept if k.startswith(("['image']", "['text']"))]
  if unfilled_towers and strict:
    raise ValueError(f"init_from {path}: tower parameters the checkpoint does not fill: "
                     f"{unfilled_towers[:10]}; set --config.init_strict=False to keep them at "
                     f"their fresh value deliberately")
  if kept:
    log.info("init_from %s: kept at their fresh value (not in the checkpoint): %s", path, kept)
  if imported_flat:
    if strict:
      raise ValueError(f"init_from {path}: weights with no place in this model: "
                       f"{sorted(imported_flat)[:10]}; set --config.init_strict=False to skip "
                       f"them deliberately")
    log.warning("init_from %s: init_strict=False: skipped weights with no place in this model: "
                "%s", path, sorted(imported_flat))
  return jax.tree.unflatten(jax.tree.structure(fresh_params), leaves)


def check_towers_match(config, model_cfg, source: str) -> None:
  """config.model vs the imported model's config: an error naming both."""
  from alip_jax.models import zoo
  wrong = [f"config.model.act={config.model.act!r} but {source} has {model_cfg.act!r}"
           ] if model_cfg.get("act", config.model.act) != config.model.act else []
  for tower, resolve in (("image", zoo.image_tower), ("text", zoo.text_tower)):
    ours, theirs = resolve(config.model[tower]), resolve(model_cfg[tower])
    wrong += [f"config.model.{tower}.{k}={ours[k]} but {source} has {theirs[k]}"
              for k in sorted(theirs) if k in ours and ours[k] != theirs[k]]
  if config.model.embed_dim != model_cfg.embed_dim:
    wrong.append(f"config.model.embed_dim={config.model.embed_dim} but {source} has "
                 f"{model_cfg.embed_dim}")
  if wrong:
    fix = "; ".join(f"set --{w.split(' but ')[0].split('=')[0]}="
                    f"{w.rsplit(' has ', 1)[1].strip(chr(39))}" for w in wrong)
    raise ValueError(f"the config and the weights disagree: {'; '.join(wrong)}. {fix}")


def build_training(model, config, mesh):
  """Returns (init_state(rng), jitted train_step, state_sharding) for `mesh`.

  The train state is a plain pytree {"step", "params", "opt", "gates",
  "skips"} (skips: non-finite steps, in total and in a row).
  Parameter shardings come from their logical axis names through
  `mesh.LOGICAL_RULES` (replicated on a pure data-parallel mesh, sharded
  over 'fsdp' and 'model' otherwise); Adam's moments follow their
  parameters; everything else is replicated. Batches are split over
  data × fsdp.
  """
  tx = optim.make_optimizer(config.optim, config.train.steps)
  boxed_params = jax.eval_shape(lambda r: init_params(model, config, r), jax.random.key(0))
  param_sharding = mesh_lib.logical_shardings(boxed_params, mesh)

  def init_state(rng):
    params = nn.unbox(init_params(model, config, rng))
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt": tx.init(params),
            "gates": losses.get(config.loss).init_state(),
            "skips": {"total": jnp.zeros((), jnp.int32), "consecutive": jnp.zeros((), jnp.int32)}}

  abstract_state = jax.eval_shape(init_state, jax.random.key(0))
  rep = mesh_lib.replicated(mesh)
  state_sharding = {
      "step": rep, "params": param_sharding, "gates": jax.tree.map(lambda _: rep, abstract_state["gates"]),
      "skips": jax.tree.map(lambda _: rep, abstract_state["skips"]),
      "opt": optax.tree_map_params(tx, lambda _, s: s, abstract_state["opt"], param_sharding,
                                   transform_non_params=lambda _: rep)}
  batch_sharding = mesh_lib.batch_sharding(mesh)
  train_step = jax.jit(
      make_train_step(model, config, tx),
      in_shardings=(state_sharding, batch_sharding),  # every batch entry
      out_shardings=(state_sharding, rep),
      donate_argnums=0)
  return init_state, train_step, state_sharding


def make_encoders(model, mesh, param_sharding=None):
  """Jitted image/text encoders for evaluation, batch-sharded over data × fsdp;
  params sharded as `param_sharding` (a pytree or one sharding; default
  replicated)."""
  batch = mesh_lib.batch_sharding(mesh)
  params_in = param_sharding if param_sharding is not None else mesh_lib.replicated(mesh)
  encode_image = jax.jit(
      lambda p, x: model.apply({"params": p}, x, method=model.encode_image),
      in_shardings=(params_in, batch), out_shardings=batch)
  encode_text = jax.jit(
      lambda p, t: model.apply({"params": p}, t, method=model.encode_text),
      in_shardings=(params_in, batch), out_shardings=batch)
  return encode_image, encode_text


class PreemptionNotice:
  """SIGTERM → stop at the next step boundary. One process: our own handler
  (a flag, no per-step sync). Several: Orbax's `reached_preemption`, which
  uses JAX's preemption sync so that all processes stop at the same step.
  Its SIGTERM handler is installed by `jax.distributed.initialize`, so ours
  must not replace it there."""

  def __init__(self):
    self.flag = False
    self._previous = None
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame):
    del signum, frame
    self.flag = True

  def requested(self, manager, step: int) -> bool:
    if jax.process_count() > 1:
      return manager.reached_preemption(step)
    return self.flag

  def close(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def save_unless_diverging(saves, step, state, data_iter) -> None:
  """Saves, except in the middle of a run of skipped (non-finite) steps: their
  params are those that failed, and saving them would let Orbax's retention
  delete an older good checkpoint."""
  streak = int(jax.device_get(state["skips"]["consecutive"]))
  if streak:
    log.warning("step %d: not saved, the last %d step(s) were non-finite", step, streak)
    return
  saves.save(step, state, data_iter)


def diverged_error(manager, step: int, streak: int, loss) -> FloatingPointError:
  """The stop after `streak` non-finite steps up to `step`, naming the last
  checkpoint that is still good. The first non-finite step F computed its
  loss on the params of step F − 1, so those already failed (e.g. after an
  lr = 1e30 update whose own loss was finite): good is a checkpoint ≤ F − 2."""
  first_bad = step - streak + 1
  good = [s for s in manager.all_steps() if s <= first_bad - 2]
  where = (f"the last good checkpoint is step {max(good)} in {manager.directory}; move the "
           f"newer step directories aside, then re-run to resume from it" if good else
           f"no checkpoint in {manager.directory} predates it; start again in a new workdir")
  return FloatingPointError(
      f"{streak} steps in a row up to step {step} had a non-finite loss or gradient (loss "
      f"{loss}) and were skipped; the params computed by step {first_bad - 1} already failed "
      f"(checked: loss and gradient norm finite at every step), so {where}. Lower optim.lr or "
      f"check the data.")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop_after: int | None = None) -> dict:
  """Trains (resuming from `workdir` if it holds checkpoints) and evaluates.

  `stop_after` ends this run after that step with a checkpoint and no final
  evaluation, as a preemption would; re-running resumes from there.

  Returns {"step", "eval": final retrieval metrics, "gates", "skipped"}.
  """
  config = config_check.validate(config)  # defaults filled in, typos stop here
  mesh = mesh_lib.make_mesh(config.mesh)
  # The mesh in context: the chunked losses' shard_map runs over it.
  with jax.set_mesh(mesh):
    return _train_and_evaluate(config, workdir, mesh, stop_after)


def _train_and_evaluate(config, workdir, mesh, stop_after):
  is_main = jax.process_index() == 0

  # ---- Batch geometry.
  local_batch = mesh_lib.check_batch_size(config.train.batch_size, mesh, jax.process_count())
  if config.eval.batch_size % mesh_lib.batch_size_divisor(mesh):
    raise ValueError(f"config.eval.batch_size={config.eval.batch_size} is not divisible "
                     f"by the batch axes data × fsdp = {mesh_lib.batch_size_divisor(mesh)}.")
  batch_sharding = mesh_lib.batch_sharding(mesh)
  log.info("mesh %s, global batch %d (%d per process)", dict(mesh.shape),
           config.train.batch_size, local_batch)

  # ---- The run directory: a resume may not change what the saved state
  # means; compared before anything is written (checkpointing/run_config.py).
  saved_steps = checkpointing.saved_steps(checkpointing.checkpoint_dir(workdir))
  config_changes = run_config.check_resume(config, workdir, saved_steps)

  # ---- Input.
  data_dir = synthetic.prepare(config, workdir)
  model, tokenizer = make_model_and_tokenizer(config, data_dir)
  used_tokenizer = getattr(tokenizer, "tokenizer_json", None) or tokenizer.model_path
  run_config.check_tokenizer(workdir, used_tokenizer, saved_steps)
  if is_main:  # the tokenizer copy: so alip_jax.load needs no data directory
    fileio.makedirs(workdir)
    run_config.record(config, workdir, config_changes, saved_steps)
    tokenizer_copy = fileio.join(workdir, os.path.basename(used_tokenizer))
    if not (saved_steps and fileio.exists(tokenizer_copy)):  # else checked equal above
      fileio.copy(used_tokenizer, tokenizer_copy)
  bad_records = pipeline.BadRecordCounter()
  train_source = records.ShardedSource(records.split_files(data_dir, config.data.train_split).files,
                                      config.data.get("skip_bad_shards", False))
  # Global batches already on the devices, made by a thread while the step runs.
  train_iter = iter(pipeline.device_prefetch(pipeline.train_dataset(
      train_source, tokenizer,
      config.data.image_size, local_batch, config.seed, bad_records,
      num_threads=config.data.num_threads, prefetch=config.data.prefetch,
      num_views=losses.get(config.loss).num_views, color_jitter=config.data.color_jitter,
      max_pixels=config.data.get("max_pixels", pipeline.MAX_PIXELS),
      workers=config.data.get("workers", 0)), batch_sharding,
      config.data.get("device_prefetch", 2)))
  eval_set = retrieval.load_retrieval_set(
      records.split_files(data_dir, config.data.eval_split).files, tokenizer,
      config.data.image_size)

  # ---- Model, optimiser and state (a plain pytree, sharded by logical rules).
  init_state, train_step, state_sharding = build_training(model, config, mesh)
  rng = jax.random.key(config.seed)
  abstract_state = jax.eval_shape(init_state, rng)
  num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(abstract_state["params"]))
  log.info("model: %.2fM parameters", num_params / 1e6)

  # ---- Resume or initialise.
  manager = checkpointing.make_manager(
      checkpointing.checkpoint_dir(workdir), config.train.keep_checkpoints,
      config.train.get("keep_every", 0), config.train.get("async_checkpoints", True))
  abstract_with_sharding = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract_state, state_sharding)
  state = checkpointing.restore_latest(manager, abstract_with_sharding, train_iter,
                                      config.train.get("restore_fallback", True))
  if state is None:
    state = jax.jit(init_state, out_shardings=state_sharding)(rng)
    if config.get("init_from"):
      # Adam's moments start at zero whatever the params: only they change.
      # Host arrays (every process reads the file) go to their shardings;
      # leaves the checkpoint lacks keep their fresh on-device values.
      state["params"] = jax.tree.map(
          lambda x, s: x if isinstance(x, jax.Array) else jax.device_put(x, s),
          imported_params(config, state["params"]), state_sharding["params"])
      log.info("initialised from %s", config.init_from)
    log.info("initialised a new run in %s", workdir)
  else:
    log.info("resumed from step %d in %s", int(state["step"]), workdir)
  first_step = int(state["step"])

  # ---- Evaluation.
  encode_image, encode_text = make_encoders(model, mesh, state_sharding["params"])
  eval_path = fileio.join(workdir, "eval.json")
  eval_log = fileio.read_json(eval_path, {})

  def run_eval(step):
    params = state["params"]
    metrics = retrieval.evaluate(lambda x: encode_image(params, x),
                                 lambda t: encode_text(params, t), eval_set,
                                 config.eval.batch_size, batch_sharding)
    if config.eval.get("zeroshot") or config.eval.get("linear_probe"):
      metrics.update(eval_tasks.run_configured(
          lambda x, n: retrieval.embed_in_batches(
              lambda b: encode_image(params, b), x, n, batch_sharding),
          lambda t, n: retrieval.embed_in_batches(
              lambda b: encode_text(params, b), tokenizer.encode_batch(t), n, batch_sharding),
          config.eval, config.data.image_size))
    eval_log[str(step)] = metrics
    monitor.write_eval(step, metrics)
    if is_main:
      fileio.write_json(eval_path, eval_log)
    log.info("eval step %d: %s", step, " ".join(
        f"{k}={v:.4f}" for k, v in metrics.items()
        if "R@" in k or k.endswith(("/top1", "/accuracy"))))
    return metrics

  # ---- The loop.
  monitor = monitoring.Monitor(
      config, workdir, first_step, config.train.batch_size * monitoring.flops_per_sample(config),
      is_main, tokenizer, batch_sharding)
  total = config.train.steps
  last_step = total if stop_after is None else min(stop_after, total)
  preemption = PreemptionNotice()
  max_skips = config.train.get("max_consecutive_skips", 10)
  preempted = False
  saves = checkpointing.SaveWatcher(manager)
  try:
    for step in range(first_step + 1, last_step + 1):
      saves.check(step - 1)  # a failed async save stops the run here, not a save later
      monitor.before_step(step)
      with monitor.waiting_for_data():
        batch = next(train_iter)
      keys = batch.pop("key")  # host strings, for the down-weighted panel
      state, summary = train_step(state, batch)
      monitor.after_step(step, summary, keys)

      if step % config.train.log_every == 0 or step == total:
        summary = jax.device_get(summary)
        if summary["consecutive_skips"] >= max_skips:
          manager.wait_until_finished()
          raise diverged_error(manager, step, int(summary["consecutive_skips"]), summary["loss"])
        if summary["skipped_steps"] > 0 and not np.isfinite(summary["loss"]):
          log.warning("step %d: non-finite loss, update skipped (%d skipped so far)", step,
                      int(summary["skipped_steps"]))
        monitor.write(step, summary, {
            "skipped_records": bad_records.total,
            # Samples trained on / training records (skipped ones not counted).
            "epoch": step * config.train.batch_size / len(train_source)})
      if preemption.requested(manager, step):
        # SIGTERM (TPU VM maintenance, SLURM time limit): save this step, stop.
        save_unless_diverging(saves, step, state, train_iter)
        log.warning("preempted: saved step %d in %s; re-run the same command to resume", step,
                    workdir)
        preempted = True
        break
      with monitor.paused():  # not in samples/s and ETA
        if step % config.train.checkpoint_every == 0 or step == last_step:
          save_unless_diverging(saves, step, state, train_iter)
        if config.train.eval_every and step % config.train.eval_every == 0 and step != total:
          run_eval(step)
  except BaseException:
    train_iter.close()  # stops Grain worker processes, if any
    raise
  finally:  # also on errors: give SIGTERM back to its previous handler
    preemption.close()

  final = run_eval(total) if last_step == total and not preempted else {}
  saves.check(last_step, wait=True)
  manager.close()
  train_iter.close()  # stops Grain worker processes, if any
  monitor.close()
  if bad_records.total:
    log.warning("skipped %d bad training records: %s", bad_records.total,
                    dict(bad_records.counts))
  return {"step": int(state["step"]), "eval": final, "preempted": preempted,
          "gates": {k: float(v) for k, v in jax.device_get(state["gates"]).items()},
          "skipped": dict(bad_records.counts), "state": state, "model": model,
          "tokenizer": tokenizer, "data_dir": data_dir}
