"""PyTorch weight files (`.pt`, `.bin`) → numpy, safely.

- a `torch.save` zip or pickle: `torch.load(weights_only=True)`, which runs
  no pickled code;
- a TorchScript archive (OpenAI's released CLIP `.pt` files):
  `torch.jit.load(map_location='cpu').state_dict()`, which loads a
  serialised graph, not pickled Python.

torch runs in this process when it is installed, else in the interpreter
`ALIP_TORCH_PYTHON` names (a venv with torch; this file is run there as a
script and hands the arrays back as .npz). Run as a script:
  python torch_files.py IN.pt OUT.npz
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np


def is_torchscript(path: str) -> bool:
  """TorchScript archives are zips with the model's code and constants;
  `torch.save` zips have only data.pkl and tensors."""
  if not zipfile.is_zipfile(path):
    return False
  with zipfile.ZipFile(path) as z:
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())


def _read_with_torch(path: str) -> dict[str, np.ndarray]:
  import torch
  if is_torchscript(path):
    state = torch.jit.load(path, map_location="cpu").state_dict()
  else:
    try:
      state = torch.load(path, map_location="cpu", weights_only=True)  # no arbitrary code
    except Exception as e:  # noqa: BLE001 -- torch's own message advises unsafe loading
      raise ValueError(
          f"{path} holds Python objects besides tensors, which are not loaded (that would run "
          f"code from the file). Save just the state dict (torch.save(model.state_dict(), …)) "
          f"or convert it to safetensors. ({type(e).__name__})") from None
    state = state.get("state_dict", state)
  return {k.removeprefix("module."): (v.float() if v.is_floating_point() else v).numpy()
          for k, v in state.items() if isinstance(v, torch.Tensor)}


def read(path: str) -> dict[str, np.ndarray]:
  """A PyTorch weight file → {name: float32 / integer numpy array}."""
  try:
    import torch  # noqa: F401
    return _read_with_torch(path)
  except ImportError:
    pass
  torch_python = os.environ.get("ALIP_TORCH_PYTHON")
  if not torch_python:
    kind = "a TorchScript archive" if is_torchscript(path) else "a PyTorch file"
    raise ImportError(
        f"{path} is {kind}; reading it needs torch: pip install torch, or set "
        f"ALIP_TORCH_PYTHON to a Python that has it, or convert the file to safetensors.")
  with tempfile.TemporaryDirectory(prefix="alip_torch_") as tmp:
    out = os.path.join(tmp, "state.npz")
    run = subprocess.run([torch_python, os.path.abspath(__file__), path, out],
                         capture_output=True, text=True)
    if run.returncode:
      raise ValueError(f"reading {path} with {torch_python} failed:\n{run.stderr[-2000:]}")
    with np.load(out) as arrays:
      return {k: arrays[k] for k in arrays.files}


if __name__ == "__main__":
  np.savez(sys.argv[2], **_read_with_torch(sys.argv[1]))
