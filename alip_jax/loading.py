"""`alip_jax.load(path)`: a trained or imported model, ready for a notebook.

  import alip_jax
  m = alip_jax.load("/runs/alip_b32")                  # a training workdir
  images = [m.preprocess(Image.open(p)) for p in paths]
  sims = m.encode_image(np.stack(images)) @ m.encode_text(["a dog", "a cat"]).T

`path` may be a training workdir (newest checkpoint, or `step=`), one of its
checkpoints (`<workdir>/checkpoints/<step>`), an HF `CLIPModel` directory
(ours exported, or transformers'), or an OpenAI / open_clip state-dict file.
Only the parameters are read (no optimiser state, no data paths); they are
placed on `mesh` (default: one device) with the training sharding rules.
A workdir (or one of its checkpoints) may be in a bucket: gs://…
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from typing import Any

import jax
import ml_collections
import numpy as np
from PIL import Image

from alip_jax import fileio, mesh as mesh_lib
from alip_jax.data.tokenizer import HFTokenizer, Tokenizer
from alip_jax.models import clip_weights, two_towers

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")  # the trainer copies one into its workdir


@dataclasses.dataclass
class LoadedModel:
  model: two_towers.TwoTowers
  params: Any
  model_config: ml_collections.ConfigDict
  tokenizer: Any
  image_size: int
  mesh: jax.sharding.Mesh
  param_sharding: Any  # NamedShardings of `params` on `mesh`
  step: int | None = None
  # A training workdir's loss config and gates' running means (H_tc, H_xt,
  # H_xc at `step`); None for imported weights.
  loss_config: Any = None
  gate_state: dict | None = None

  def __post_init__(self):
    from alip_jax import train
    self._encode_image, self._encode_text = train.make_encoders(
        self.model, self.mesh, self.param_sharding)
    self._ways = mesh_lib.batch_size_divisor(self.mesh)

  @property
  def logit_scale(self) -> float:
    return float(np.exp(np.asarray(self.params["logit_scale"])))

  def preprocess(self, image) -> np.ndarray:
    """PIL image or path → uint8 [S, S, 3]: RGB, shorter side to S, centre crop."""
    from alip_jax.data.pipeline import eval_image
    if not isinstance(image, Image.Image):
      image = Image.open(image)
    return eval_image(image.convert("RGB"), self.image_size)

  def _run(self, fn, x, batch_size):
    out = []
    for start in range(0, len(x), batch_size):
      chunk = x[start:start + batch_size]
      padded = -len(chunk) % self._ways  # the batch axes must divide the batch
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], padded, 0)]) if padded else chunk
      out.append(mesh_lib.to_host(fn(self.params, chunk))[:len(chunk) - padded])
    return np.concatenate(out) if out else np.zeros((0, self.model_config.embed_dim), np.float32)

  def encode_image(self, images, batch_size: int = 256) -> np.ndarray:
    """uint8 [B, S, S, 3] (as `preprocess` gives) or CLIP-normalised float
    → L2-normalised float32 [B, D]."""
    return self._run(self._encode_image, np.asarray(images), batch_size)

  def encode_text(self, texts, batch_size: int = 1024) -> np.ndarray:
    """list of str, or int tokens [B, L] → L2-normalised float32 [B, D]."""
    tokens = self.tokenizer.encode_batch(list(texts)) if not isinstance(texts, np.ndarray) else texts
    return self._run(self._encode_text, tokens, batch_size)


def _param_sharding(model, image_size: int, context_length: int, mesh):
  """The training sharding rules applied to `model`'s params on `mesh`
  (logical axis names from an abstract init)."""
  from alip_jax import train
  config = ml_collections.ConfigDict(dict(data=dict(image_size=image_size,
                                                    context_length=context_length)))
  boxed = jax.eval_shape(lambda r: train.init_params(model, config, r), jax.random.key(0))
  return mesh_lib.logical_shardings(boxed, mesh)


def _default_mesh():
  return mesh_lib.make_mesh(dict(data=1), jax.devices()[:1])


def load(path: str, step: int | None = None, mesh=None, tokenizer: str | None = None) -> LoadedModel:
  """See the module docstring. `tokenizer` overrides the tokenizer file
  (tokenizer.model for SentencePiece, tokenizer.json for HF BPE)."""
  mesh = mesh or _default_mesh()
  path = str(path).rstrip("/") if fileio.is_remote(path) else os.path.abspath(path)
  parent, name = path.rsplit("/", 1)
  if parent.endswith("/checkpoints") and name.isdigit():
    path, step = parent.rsplit("/", 1)[0], int(name)
  if fileio.is_remote(path):
    config = fileio.read_json(fileio.join(path, "config.json"))
    return _from_workdir(path, ml_collections.ConfigDict(config), step, tokenizer, mesh)
  if os.path.isfile(path):
    params, model_cfg, sizes = clip_weights.load_openai(path)
    return _from_weights(params, model_cfg, sizes, tokenizer, mesh)
  with open(os.path.join(path, "config.json")) as f:
    config = json.load(f)
  if config.get("model_type") == "clip":
    params, model_cfg, sizes = clip_weights.load_hf(path)
    tokenizer = tokenizer or _find_tokenizer(path)
    return _from_weights(params, model_cfg, sizes, tokenizer, mesh)
  return _from_workdir(path, ml_collections.ConfigDict(config), step, tokenizer, mesh)


def _find_tokenizer(directory):
  """The tokenizer file in `directory`; from a bucket, a local copy of it
  (SentencePiece and tokenizers read local files)."""
  found = next((fileio.join(directory, f) for f in TOKENIZER_FILES
                if fileio.exists(fileio.join(directory, f))), None)
  if found and fileio.is_remote(found):
    local = os.path.join(tempfile.mkdtemp(prefix="alip_tokenizer_"), os.path.basename(found))
    fileio.copy(found, local)
    return local
  return found


def make_tokenizer(path: str | None, context_length: int):
  if path is None:
    raise FileNotFoundError("no tokenizer found: pass tokenizer='…/tokenizer.json' or '…/tokenizer.model'")
  if path.endswith(".json"):
    return HFTokenizer(path, context_length)
  return Tokenizer(path, context_length)


def _from_weights(params, model_cfg, sizes, tokenizer_path, mesh) -> LoadedModel:
  tok = make_tokenizer(tokenizer_path, sizes["context_length"])
  model = two_towers.from_config(model_cfg, sizes["vocab_size"], sizes["context_length"])
  sharding = _param_sharding(model, sizes["image_size"], sizes["context_length"], mesh)
  return LoadedModel(model, jax.device_put(params, sharding), model_cfg, tok,
                     sizes["image_size"], mesh, sharding)


def _from_workdir(workdir, config, step, tokenizer_path, mesh) -> LoadedModel:
  import orbax.checkpoint as ocp
  from alip_jax import checkpointing, losses, train
  tok = make_tokenizer(tokenizer_path or _find_tokenizer(workdir), config.data.context_length)
  model = two_towers.from_config(config.model, tok.vocab_size, config.data.context_length,
                                 **losses.head_kwargs(config.loss),
                                 eot_id=getattr(tok, "eot_id", None))
  init_state, _, state_sharding = train.build_training(model, config, mesh)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          jax.eval_shape(init_state, jax.random.key(0)), state_sharding)
  manager = ocp.CheckpointManager(checkpointing.checkpoint_dir(workdir), item_names=("state",))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"{workdir}/checkpoints holds no finished checkpoint")
  with jax.set_mesh(mesh):
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
  manager.close()
  return LoadedModel(model, state["params"], config.model, tok, config.data.image_size, mesh,
                     state_sharding["params"], step, config.loss,
                     {k: float(v) for k, v in jax.device_get(state["gates"]).items()})


def export(loaded: LoadedModel, directory: str) -> None:
  """Writes `loaded` as an HF CLIPModel directory, with its tokenizer file."""
  import shutil
  clip_weights.export_hf(jax.device_get(loaded.params), loaded.model_config,
                         loaded.tokenizer.vocab_size, loaded.tokenizer.context_length,
                         loaded.image_size, directory, eot_id=loaded.model.text.eot_id)
  source = getattr(loaded.tokenizer, "tokenizer_json", None) or loaded.tokenizer.model_path
  shutil.copy(source, os.path.join(directory, os.path.basename(source)))
