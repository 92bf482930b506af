"""`alip_jax.load(path)`: a trained or imported model, ready for a notebook.

  import alip_jax
  m = alip_jax.load("/runs/alip_b32")                  # a training workdir
  images = [m.preprocess(Image.open(p)) for p in paths]
  sims = m.encode_image(np.stack(images)) @ m.encode_text(["a dog", "a cat"]).T

`path` may be a training workdir (newest checkpoint, or `step=`), one of its
checkpoints (`<workdir>/checkpoints/<step>`), an HF `CLIPModel` directory
(ours exported, or transformers'; one weights file or shards), an open_clip
model directory (open_clip_config.json), a model on the Hugging Face Hub
('hf-hub:org/name', through huggingface_hub's cache: alip_jax/hub.py), or an
OpenAI / open_clip state-dict file.
A workdir's whole train state is restored (its config builds the abstract
state; no data paths are read) and only the parameters and the objective's
state are kept; they are placed on `mesh` (default: one device) with the
training sharding rules.
A workdir (or one of its checkpoints) may be in a bucket: gs://…
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from PIL import Image

from alip_jax import fileio, hub, mesh as mesh_lib, rundir, state as state_lib
from alip_jax.data.tokenizer import EOT_ID
from alip_jax.evaluation import retrieval
from alip_jax.models import clip_weights, open_clip_format, openai_weights, two_towers

MIN_BUCKET = 8  # the smallest padded batch the encoders are compiled for
DEFAULT_TEMPLATES = ("a photo of a {}.",)


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
  source: str | None = None  # what `load` was given (a workdir: its eval.json feeds model cards)
  config: ml_collections.ConfigDict | None = None  # the training config, for workdirs
  # A training workdir's loss config and gates' running means (H_tc, H_xt,
  # H_xc at `step`); None for imported weights.
  loss_config: Any = None
  gate_state: dict | None = None

  def __post_init__(self):
    self._encode_image, self._encode_text = state_lib.make_encoders(
        self.model, self.mesh, self.param_sharding)
    self._ways = mesh_lib.batch_size_divisor(self.mesh)

  @property
  def logit_scale(self) -> float:
    return float(np.exp(np.asarray(self.params["logit_scale"])))

  def preprocess(self, image) -> np.ndarray:
    """PIL image or path → uint8 [S, S, 3]: decoded as the training data is
    (a file: EXIF orientation; transparency onto white; RGB), shorter side
    to S, centre crop."""
    from alip_jax.data import web
    from alip_jax.data.pipeline import eval_image
    if not isinstance(image, Image.Image):
      with open(image, "rb") as f:
        image = web.load_image(f.read())
    return eval_image(web.to_rgb(image), self.image_size)

  def bucket(self, n: int, batch_size: int) -> int:
    """The padded batch for `n` items: the next power of two from MIN_BUCKET
    up to `batch_size`, a multiple of the mesh's batch ways. So any mix of
    request sizes compiles each encoder a few times (log2 of the batch
    size), not once per new size."""
    size = min(max(MIN_BUCKET, 1 << max(n - 1, 0).bit_length()), max(batch_size, n))
    return -(-size // self._ways) * self._ways

  def _run(self, fn, x, batch_size):
    return retrieval.embed_in_batches(lambda chunk: fn(self.params, chunk), x, batch_size,
                                      pad_to=lambda n: self.bucket(n, batch_size))

  def encode_image(self, images, batch_size: int = 256) -> np.ndarray:
    """uint8 [B, S, S, 3] (as `preprocess` gives) or CLIP-normalised float
    → L2-normalised float32 [B, D]."""
    return self._run(self._encode_image, np.asarray(images), batch_size)

  def encode_text(self, texts, batch_size: int = 1024) -> np.ndarray:
    """list of str, or int tokens [B, L] → L2-normalised float32 [B, D]."""
    tokens = self.tokenizer.encode_batch(list(texts)) if not isinstance(texts, np.ndarray) else texts
    return self._run(self._encode_text, tokens, batch_size)

  def zero_shot(self, images, classnames, templates=DEFAULT_TEMPLATES) -> np.ndarray:
    """Class probabilities [N, C] for `images` (PIL images, paths, or an
    array as `encode_image` takes) over `classnames`, the CLIP way: each
    class is the mean of its prompts' embeddings ("a photo of a {}."), the
    logits are the cosines times the model's logit scale."""
    from alip_jax.evaluation.classification import class_embeddings
    if not isinstance(images, np.ndarray):
      images = np.stack([self.preprocess(x) for x in images])
    classes = class_embeddings(self.encode_text, list(classnames), list(templates))
    logits = self.logit_scale * self.encode_image(images) @ classes.T
    logits = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return logits / logits.sum(axis=-1, keepdims=True)


def load(path: str, step: int | None = None, mesh=None, tokenizer: str | None = None) -> LoadedModel:
  """See the module docstring. `tokenizer` overrides the tokenizer file
  (tokenizer.model for SentencePiece, tokenizer.json for HF BPE)."""
  mesh = mesh or state_lib.one_device_mesh()
  source = str(path)
  if hub.is_hub_name(path):
    path = hub.download(path)
  path = str(path).rstrip("/") if fileio.is_remote(path) else os.path.abspath(path)
  workdir, step_of_path = rundir.split_step(path)
  if step_of_path is not None:
    if step is not None and step != step_of_path:
      raise ValueError(f"{path} is step {step_of_path}, but step={step} was asked for")
    step = step_of_path
  if fileio.is_remote(workdir) or rundir.training_workdir(workdir):
    return _from_workdir(workdir, step, tokenizer, mesh)
  if os.path.isfile(path):
    params, model_cfg, sizes = openai_weights.load_openai(path)
    return _from_weights(params, model_cfg, sizes, tokenizer, mesh, source)
  has_config = os.path.exists(os.path.join(path, "config.json"))
  if has_config:
    with open(os.path.join(path, "config.json")) as f:
      is_hf = json.load(f).get("model_type") == "clip"
    if is_hf:
      params, model_cfg, sizes = clip_weights.load_hf(path)
      return _from_weights(params, model_cfg, sizes, tokenizer or rundir.find_tokenizer(path),
                           mesh, source)
  # An open_clip directory; ours also has a config.json for AutoTokenizer.
  if os.path.exists(os.path.join(path, open_clip_format.CONFIG_FILE)):
    params, model_cfg, sizes = open_clip_format.load(path)
    return _from_weights(params, model_cfg, sizes, tokenizer or rundir.find_tokenizer(path),
                         mesh, source)
  if not has_config:
    raise FileNotFoundError(f"{path} has no config.json (a training workdir, an HF CLIP "
                            f"directory) nor {open_clip_format.CONFIG_FILE} (an open_clip one)")
  return _from_workdir(path, step, tokenizer, mesh)


def _from_weights(params, model_cfg, sizes, tokenizer_path, mesh, source) -> LoadedModel:
  tok = state_lib.make_tokenizer(tokenizer_path, sizes["context_length"])
  # The weights replace the logit scale's initial value.
  model = two_towers.from_config(model_cfg, sizes["vocab_size"], sizes["context_length"],
                                 eot_id=model_cfg.get("eot_id", EOT_ID), logit_scale_init=0.0)
  sharding = state_lib.param_shardings(model, sizes["image_size"], sizes["context_length"], mesh)
  return LoadedModel(model, jax.device_put(params, sharding), model_cfg, tok,
                     sizes["image_size"], mesh, sharding, source=source)


def _from_workdir(workdir, step, tokenizer_path, mesh) -> LoadedModel:
  run = state_lib.restore_run(workdir, mesh, step, tokenizer_path)
  return LoadedModel(run.model, run.state["params"], run.config.model, run.tokenizer,
                     run.config.data.image_size, mesh, run.spec.sharding["params"], run.step,
                     source=workdir, config=run.config, loss_config=run.config.loss,
                     gate_state={k: float(v) for k, v in jax.device_get(run.state["gates"]).items()})
