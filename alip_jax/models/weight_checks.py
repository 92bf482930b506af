"""The weight-import contract: nothing in a weight file is silently dropped,
nothing in the model is silently left at random.

- every tensor of the file is consumed by the conversion, or reported as
  unexpected (an error; `strict=False` skips them and prints which);
- every parameter of the model the file's config describes is filled, with
  the shape that config gives it: checked at load time, naming the parameter;
- the config and the weights agree on depth (a config.json saying 1 layer
  over weights for 2 is an error naming both);
- every tensor is finite.
"""

from __future__ import annotations

import logging
import re

import numpy as np

log = logging.getLogger(__name__)

# Buffers, not weights: HF's position_ids, open_clip's attention mask, the
# sizes OpenAI's files carry as tensors.
IGNORED = ("input_resolution", "context_length", "vocab_size")
IGNORED_SUFFIXES = ("position_ids", "attn_mask")


class WeightImportError(ValueError):
  """A weight file that does not fill the model its config describes."""


class TrackedStateDict(dict):
  """A state dict that remembers which tensors the conversion read, and
  names the file when one is missing."""

  def __init__(self, state_dict, source: str):
    super().__init__(state_dict)
    self.source, self.used = source, set()

  def __getitem__(self, key):
    if not dict.__contains__(self, key):
      raise WeightImportError(
          f"{self.source}: tensor {key!r} is missing, but the model its config describes "
          f"needs it; the file is incomplete or holds another architecture")
    self.used.add(key)
    return dict.__getitem__(self, key)

  def unexpected(self) -> list[str]:
    return sorted(k for k in self if k not in self.used and k not in IGNORED
                  and not k.endswith(IGNORED_SUFFIXES))


def layer_count(keys, pattern: str) -> int:
  """1 + the highest layer index `pattern` (a regex with one group) finds."""
  found = [int(m.group(1)) for k in keys if (m := re.match(pattern, k))]
  return max(found) + 1 if found else 0


def check_depth(keys, pattern: str, said: int, where: str, source: str) -> None:
  held = layer_count(keys, pattern)
  if held != said:
    raise WeightImportError(f"{where} says {said} layer(s), but {source} holds weights for "
                            f"{held}: the config and the weights disagree")


def check_consumed(sd: TrackedStateDict, strict: bool) -> None:
  """Unexpected tensors: an error, or with strict=False a printed skip list;
  non-finite tensors: always an error."""
  for key in sorted(sd.used):
    value = dict.__getitem__(sd, key)
    if np.issubdtype(np.asarray(value).dtype, np.floating) and not np.all(np.isfinite(value)):
      raise WeightImportError(f"{sd.source}: tensor {key!r} holds non-finite values (NaN or "
                              f"inf); the file is damaged or the model had diverged")
  unexpected = sd.unexpected()
  if not unexpected:
    return
  shown = ", ".join(unexpected[:10]) + (f" … ({len(unexpected)} in all)" if len(unexpected) > 10 else "")
  if strict:
    raise WeightImportError(f"{sd.source}: {len(unexpected)} tensor(s) have no place in the "
                            f"model its config describes: {shown}. If leaving them out is "
                            f"deliberate, load with strict=False.")
  log.warning("%s: strict=False: skipped %d tensor(s) with no place in the model: %s",
              sd.source, len(unexpected), shown)


def expected_shapes(model_cfg, sizes) -> dict[str, tuple]:
  """{parameter path: shape} of the model `model_cfg` and `sizes` describe."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  from alip_jax.models import two_towers
  # No shape depends on the EOT id or the heads' initial values.
  model = two_towers.from_config(model_cfg, sizes["vocab_size"], sizes["context_length"],
                                 eot_id=0, logit_scale_init=0.0)
  s, length = sizes["image_size"], sizes["context_length"]
  boxed = jax.eval_shape(lambda r: model.init(
      r, jnp.zeros((1, s, s, 3), jnp.uint8), {"raw": jnp.zeros((1, length), jnp.int32)})["params"],
                         jax.random.key(0))
  return {"/".join(str(k.key) for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(nn.unbox(boxed))[0]}


def check_filled(params, model_cfg, sizes, source: str) -> None:
  """Every parameter of the described model is there with its shape."""
  import jax
  got = {"/".join(str(k.key) for k in path): tuple(np.shape(leaf))
         for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
  problems = []
  for name, shape in expected_shapes(model_cfg, sizes).items():
    if name not in got:
      problems.append(f"  {name}: not filled by the file (expected {shape})")
    elif got[name] != shape:
      problems.append(f"  {name}: {got[name]} in the file, {shape} from its config")
  if problems:
    raise WeightImportError(f"{source} does not fit the model its config describes "
                            f"(towers {dict(model_cfg.image)}, {dict(model_cfg.text)}, "
                            f"embed_dim {model_cfg.embed_dim}, {sizes}):\n" + "\n".join(problems))
