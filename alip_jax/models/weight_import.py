"""Public CLIP weights onto a fresh parameter tree (`config.init_from`).

`read` opens the weight formats (HF `CLIPModel`, open_clip model
directories, OpenAI / open_clip state dicts); `fill` puts what was read into
a fresh parameter tree after `check_towers_match` has compared the config's
towers with the checkpoint's. Reading one of our own training workdirs
('workdir:W') needs the train state, so that case lives in alip_jax/state.py.
"""

from __future__ import annotations

import logging

import jax
import numpy as np

from alip_jax.models import clip_weights, open_clip_format, openai_weights, transformer, zoo

log = logging.getLogger(__name__)


def read(kind: str, path: str, act: str, strict: bool):
  """(params, model config) of the weights at `path`; `kind` is 'hf',
  'open_clip' or 'openai' (as `hub.resolve_init_from` names them)."""
  if kind == "hf":
    imported, model_cfg, _ = clip_weights.load_hf(path, strict=strict)
  elif kind == "open_clip":
    imported, model_cfg, _ = open_clip_format.load(path)
  elif kind == "openai":
    imported, model_cfg, _ = openai_weights.load_openai(path, act=act, strict=strict)
  else:
    raise ValueError(f"unknown weight format {kind!r}: use 'hf', 'open_clip' or 'openai'")
  return imported, model_cfg


def fill(config, fresh_params, imported, model_cfg, path: str, strict: bool):
  """`fresh_params` with every tower weight replaced by the one in
  `imported` (unstacked layers), as a host array. The config's towers must
  match the checkpoint's (an error names both); heads the checkpoint has no
  place for (a SigLIP bias, UniCLIP's augmentation MLP) keep their fresh
  value and are listed. `strict=False` deliberately loads a part: what is
  skipped is printed."""
  check_towers_match(config, model_cfg, config.init_from)
  if config.model.scan:
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
