"""Models on the Hugging Face Hub, by name: 'hf-hub:org/name' (or
'hf-hub:org/name@revision') → a local directory, through huggingface_hub's
cache. Offline (HF_HUB_OFFLINE=1) the cache alone answers; HF_HUB_CACHE
says where it is (default ~/.cache/huggingface/hub).

Only what loading reads is fetched: the JSON configs and tokenizer files,
and one set of weights, the first a repository has of: transformers'
safetensors (one file or shards), open_clip's safetensors, PyTorch `.bin`.
"""

from __future__ import annotations

import glob
import json
import os

PREFIX = "hf-hub:"
CONFIG_FILES = ["*.json", "tokenizer.model"]
WEIGHT_CHOICES = (["model.safetensors", "model-*-of-*.safetensors"], ["open_clip_model.safetensors"],
                  ["pytorch_model.bin", "pytorch_model-*-of-*.bin"], ["open_clip_pytorch_model.bin"])


def is_hub_name(name) -> bool:
  return str(name).startswith(PREFIX)


def download(name: str) -> str:
  """'hf-hub:org/name[@revision]' → the local snapshot directory."""
  from huggingface_hub import snapshot_download
  from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
  repo_id, _, revision = name[len(PREFIX):].partition("@")
  if repo_id.count("/") != 1:
    raise ValueError(f"{name!r}: write hf-hub:ORG/NAME (optionally @REVISION)")
  try:
    for weights in WEIGHT_CHOICES:
      path = snapshot_download(repo_id, revision=revision or None,
                               allow_patterns=CONFIG_FILES + weights)
      if any(glob.glob(os.path.join(path, pattern)) for pattern in weights):
        break
  except (LocalEntryNotFoundError, HfHubHTTPError) as e:
    from huggingface_hub import constants
    raise FileNotFoundError(
        f"{name}: not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and not downloadable "
        f"here ({type(e).__name__}). On a machine with network run `hf download {repo_id}` "
        f"(or load it once), then copy that cache and point HF_HUB_CACHE at it; "
        f"HF_HUB_OFFLINE=1 makes loading use the cache only.") from e
  return path


def directory_kind(directory: str) -> str:
  """'hf' (a transformers CLIPModel directory) or 'open_clip'."""
  config = os.path.join(directory, "config.json")
  if os.path.exists(config):
    with open(config) as f:
      if json.load(f).get("model_type") == "clip":
        return "hf"
  if os.path.exists(os.path.join(directory, "open_clip_config.json")):
    return "open_clip"
  raise ValueError(f"{directory} is neither a transformers CLIPModel directory (config.json "
                   f"with model_type 'clip') nor an open_clip one (open_clip_config.json)")


def resolve_init_from(init_from: str) -> tuple[str, str]:
  """`config.init_from` → (kind, local path): 'hf-hub:org/name' becomes
  ('hf' | 'open_clip', its snapshot directory); others pass through as
  ('hf', DIR), ('open_clip', DIR), ('openai', FILE)."""
  if is_hub_name(init_from):
    directory = download(init_from)
    return directory_kind(directory), directory
  kind, _, path = init_from.partition(":")
  return kind, path
