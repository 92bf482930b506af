"""A run's model and train state, built the same way by everyone who needs
them: the trainer, `alip_jax.load`, the evaluator and the scorer.

- `make_tokenizer` (of the file rundir.tokenizer_file picks), `make_model`;
- `init_params` (with logical axis names) and `param_shardings`;
- `state_spec`: the train state, a plain pytree {"step", "params", "opt",
  "gates", "skips"}, its initialiser, shardings and abstract shape tree;
- `restore_run`: a workdir's saved state, read-only (for `alip_jax.load` and
  `init_from='workdir:W'`);
- `imported_params`: `config.init_from` weights onto fresh params;
- `make_encoders`: the jitted image / text encoders evaluation runs.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from alip_jax import checkpointing, hub, losses, mesh as mesh_lib, optim, rundir
from alip_jax.data.tokenizer import EOT_ID, SOT_ID, HFTokenizer, Tokenizer
from alip_jax.models import transformer, two_towers, weight_import

log = logging.getLogger(__name__)


# ---- Tokenizer and model.

def make_tokenizer(path: str | None, context_length: int):
  """tokenizer.json → HF BPE; anything else → a SentencePiece model."""
  if path is None:
    raise FileNotFoundError("no tokenizer found: pass tokenizer='…/tokenizer.json' or '…/tokenizer.model'")
  if path.endswith(".json"):
    return HFTokenizer(path, context_length)
  return Tokenizer(path, context_length)


def make_model(config, tokenizer) -> two_towers.TwoTowers:
  """The model `config` describes, sized for `tokenizer`, with the heads its
  loss needs. It pools at the tokenizer's EOT (HF BPE), else at the
  SentencePiece EOT."""
  return two_towers.from_config(config.model, tokenizer.vocab_size, config.data.context_length,
                                eot_id=getattr(tokenizer, "eot_id", EOT_ID),
                                **losses.get(config.loss).model_heads)


def make_model_and_tokenizer(config, data_dir):
  """The model, and the tokenizer `rundir.tokenizer_file` picks."""
  tokenizer = make_tokenizer(rundir.tokenizer_file(config, data_dir), config.data.context_length)
  return make_model(config, tokenizer), tokenizer


# ---- Parameters and the train state.

def _init_boxed(model, image_size: int, context_length: int, rng):
  images = jnp.zeros((1, image_size, image_size, 3), jnp.uint8)
  tokens = jnp.zeros((1, context_length), jnp.int32).at[:, :2].set(jnp.array([SOT_ID, EOT_ID]))
  return model.init(rng, images, {"raw": tokens})["params"]


def init_params(model, config, rng):
  """Parameters with their logical axis names (`nn.LogicallyPartitioned`
  boxes); `nn.unbox` gives the plain arrays the train state holds."""
  return _init_boxed(model, config.data.image_size, config.data.context_length, rng)


def param_shardings(model, image_size: int, context_length: int, mesh):
  """NamedShardings of `model`'s params on `mesh`: their logical axis names
  through `mesh.LOGICAL_RULES` (replicated on a pure data-parallel mesh,
  sharded over 'fsdp' and 'model' otherwise)."""
  boxed = jax.eval_shape(lambda r: _init_boxed(model, image_size, context_length, r),
                         jax.random.key(0))
  return mesh_lib.logical_shardings(boxed, mesh)


@dataclasses.dataclass(frozen=True)
class StateSpec:
  """How a run's train state is made and laid out on a mesh."""
  init: Callable[[Any], dict]  # rng → state, unsharded (see `initialise`)
  sharding: dict  # NamedShardings, the state's tree
  abstract: dict  # jax.ShapeDtypeStruct leaves carrying `sharding`: restores, AOT lowering
  optimizer: optax.GradientTransformation

  def initialise(self, rng) -> dict:
    return jax.jit(self.init, out_shardings=self.sharding)(rng)


def state_spec(model, config, mesh) -> StateSpec:
  """The train state {"step", "params", "opt", "gates", "skips"} (skips:
  non-finite steps, in total and in a row) on `mesh`. Parameter shardings
  follow the logical rules; Adam's moments follow their parameters;
  everything else is replicated."""
  tx = optim.make_optimizer(config.optim, config.train.steps)
  param_sharding = param_shardings(model, config.data.image_size, config.data.context_length,
                                   mesh)

  def init_state(rng):
    params = nn.unbox(init_params(model, config, rng))
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt": tx.init(params),
            "gates": losses.get(config.loss).init_state(),
            "skips": {"total": jnp.zeros((), jnp.int32), "consecutive": jnp.zeros((), jnp.int32)}}

  abstract_state = jax.eval_shape(init_state, jax.random.key(0))
  rep = mesh_lib.replicated(mesh)
  sharding = {
      "step": rep, "params": param_sharding, "gates": jax.tree.map(lambda _: rep, abstract_state["gates"]),
      "skips": jax.tree.map(lambda _: rep, abstract_state["skips"]),
      "opt": optax.tree_map_params(tx, lambda _, s: s, abstract_state["opt"], param_sharding,
                                   transform_non_params=lambda _: rep)}
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          abstract_state, sharding)
  return StateSpec(init_state, sharding, abstract, tx)


# ---- A finished (or stopped) run, read back.

@dataclasses.dataclass
class RestoredRun:
  config: ml_collections.ConfigDict
  tokenizer: Any
  model: two_towers.TwoTowers
  step: int
  state: dict  # the whole train state, on `spec.sharding`
  spec: StateSpec


def one_device_mesh():
  return mesh_lib.make_mesh(dict(data=1), jax.devices()[:1])


def restore_run(workdir: str, mesh=None, step: int | None = None,
                tokenizer_path: str | None = None) -> RestoredRun:
  """The train state a workdir saved (newest readable step, or `step`) on
  `mesh` (default: one device), with the run's config, tokenizer copy and
  model. Read-only: nothing is created or moved in `workdir`."""
  import orbax.checkpoint as ocp
  mesh = mesh or one_device_mesh()
  config = rundir.read_config(workdir)
  tokenizer = make_tokenizer(tokenizer_path or rundir.find_tokenizer(workdir),
                             config.data.context_length)
  model = make_model(config, tokenizer)
  spec = state_spec(model, config, mesh)
  manager = ocp.CheckpointManager(rundir.checkpoint_dir(workdir), item_names=("state",),
                                  options=ocp.CheckpointManagerOptions(create=False))

  def restore_step(candidate):
    checkpointing.check_shapes(manager, candidate, spec.abstract)
    with jax.set_mesh(mesh):
      return manager.restore(candidate, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(spec.abstract)))["state"]

  step, state, skipped = checkpointing.restore_newest_readable(manager, restore_step, step=step)
  manager.close()
  if step is None:
    raise FileNotFoundError(f"{rundir.checkpoint_dir(workdir)} holds no finished checkpoint")
  if skipped:
    log.warning("loaded step %d of %s: newer step(s) %s do not read and were skipped (left in "
                "place)", step, workdir, skipped)
  return RestoredRun(config, tokenizer, model, step, state, spec)


def imported_params(config, fresh_params):
  """`config.init_from` = 'hf:DIR' (HF CLIPModel), 'open_clip:DIR' (open_clip
  model directory), 'hf-hub:ORG/NAME' (either, from the Hugging Face Hub),
  'openai:FILE' (OpenAI / open_clip state dict or TorchScript archive) or
  'workdir:W' (one of our training workdirs, its newest readable checkpoint)
  → `fresh_params` with every tower weight replaced by the imported one
  (`models.weight_import.fill`). `config.init_strict=False` deliberately
  loads a part."""
  strict = config.init_strict
  kind, path = hub.resolve_init_from(config.init_from)
  if kind == "workdir":
    run = restore_run(path)
    imported, model_cfg = jax.device_get(run.state["params"]), run.config.model
    if model_cfg.scan:
      imported = transformer.unstack_layers(imported)
  elif kind in ("hf", "open_clip", "openai"):
    imported, model_cfg = weight_import.read(kind, path, config.model.act, strict)
  else:
    raise ValueError(f"config.init_from must be 'hf:DIR', 'open_clip:DIR', 'hf-hub:ORG/NAME', "
                     f"'openai:FILE' or 'workdir:W', got {config.init_from!r}")
  return weight_import.fill(config, fresh_params, imported, model_cfg, path, strict)


# ---- Evaluation.

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
