"""Synthetic captions from a local image-to-text model (the captioner stage).

  python -m alip_jax.tools.caption --model models/blip-base --input 'shards/*.tar' \
      --out captions.jsonl --batch_size 64 --device cuda

ALIP captioned YFCC15M with OFA; BLIP, BLIP-2 and GIT are the usual local
choices. `--model` is a directory saved with `save_pretrained` (model and
processor) — nothing is downloaded. Every decodable image of the inputs (the
same tars and tables as alip_jax.tools.build, read by tools/inputs.py) gets
one row {"key", "caption"} in `--out`, the `--captions` file of the builder;
`python -m alip_jax.tools.build --captioner DIR` runs this stage itself.
Rows are appended and flushed per batch, and a re-run skips keys that
already have a caption, so an interrupted stage continues where it stopped.

Needs torch and transformers, which the JAX training venv does not: run it
where they are installed (`--captioner_python` in the builder), e.g. the
venv of requirements-torch.txt. It imports no JAX.
"""

from __future__ import annotations

import argparse
import importlib.resources
import itertools
import json
import os
import subprocess
import tempfile
import time

from alip_jax import extras, progress
from alip_jax.data import web
from alip_jax.tools.inputs import Columns, expand, read_input


def load_captioner(model_dir: str, device: str = "cpu"):
  """(processor, model) of an HF image-to-text model saved in `model_dir`."""
  torch = extras.require("torch", "The captioner stage")
  transformers = extras.require("transformers", "The captioner stage")
  AutoModelForImageTextToText, AutoProcessor = (transformers.AutoModelForImageTextToText,
                                                transformers.AutoProcessor)
  processor = AutoProcessor.from_pretrained(model_dir)
  model = AutoModelForImageTextToText.from_pretrained(model_dir).to(device).eval()
  torch.set_grad_enabled(False)
  return processor, model


def caption_batch(processor, model, images, max_new_tokens: int = 30, num_beams: int = 1,
                  prompt: str = "") -> list[str]:
  """Greedy (or beam) captions of a list of RGB PIL images."""
  kwargs = {"text": [prompt] * len(images)} if prompt else {}
  inputs = processor(images=images, return_tensors="pt", **kwargs).to(model.device)
  ids = model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=num_beams)
  texts = processor.batch_decode(ids, skip_special_tokens=True)
  return [t[len(prompt):].strip() if prompt and t.startswith(prompt) else t.strip() for t in texts]


def done_keys(path: str) -> set[str]:
  if not os.path.exists(path):
    return set()
  with open(path) as f:
    return {json.loads(line)["key"] for line in f if line.strip()}


def run(model_dir: str, inputs: list[str], out: str, columns: Columns = Columns(),
        batch_size: int = 32, max_new_tokens: int = 30, num_beams: int = 1, prompt: str = "",
        device: str = "cpu", max_pixels: int = web.MAX_PIXELS,
        disable_progress: bool = False) -> dict:
  """Captions every new image of `inputs` into `out`; returns the counts. A
  progress bar (images captioned, images/s) shows when stderr is a terminal."""
  processor, model = load_captioner(model_dir, device)
  skip = done_keys(out)
  counts = {"captioned": 0, "already_captioned": 0, "undecodable_image": 0, "missing_image": 0}
  start = time.time()
  bar = progress.bar(desc="captioned", unit="img", disable=disable_progress, leave=True)
  with open(out, "a") as f, bar:
    keys, images = [], []

    def flush():
      for key, text in zip(keys, caption_batch(processor, model, images, max_new_tokens,
                                               num_beams, prompt)):
        f.write(json.dumps({"key": key, "caption": text}) + "\n")
      f.flush()
      counts["captioned"] += len(keys)
      bar.update(len(keys))
      bar.set_postfix(skipped=counts["already_captioned"] + counts["undecodable_image"] +
                      counts["missing_image"], refresh=False)
      keys.clear()
      images.clear()

    for path in expand(inputs):
      for key, image, _, _ in read_input(path, columns):
        if key in skip:
          counts["already_captioned"] += 1
          continue
        if image is None:
          counts["missing_image"] += 1
          continue
        try:
          images.append(web.load_image(image, max_pixels))
        except Exception:  # pylint: disable=broad-except
          counts["undecodable_image"] += 1
          continue
        keys.append(key)
        skip.add(key)
        if len(keys) == batch_size:
          flush()
    if keys:
      flush()
  return {**counts, "seconds": round(time.time() - start, 1)}


def run_in_python(python: str, model_dir: str, inputs: list[str], out: str,
                  extra_args: list[str] = (), module: str = "alip_jax.tools.caption") -> str:
  """Runs this module (or beam_caption) in `python` (torch lives in another
  venv than JAX, so the builder captions through a subprocess); returns `out`."""
  command = [python, "-m", module, "--model", model_dir, "--out", out,
             *itertools.chain.from_iterable(("--input", i) for i in inputs), *extra_args]
  # That Python imports alip_jax through a directory holding only a link to
  # the package: the package's parent may be a site-packages whose compiled
  # modules belong to this Python.
  with tempfile.TemporaryDirectory(prefix="alip_jax_path_") as path_dir:
    os.symlink(str(importlib.resources.files("alip_jax")), os.path.join(path_dir, "alip_jax"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [path_dir, os.environ.get(
        "PYTHONPATH")]))}
    returncode = subprocess.run(command, env=env).returncode
  if returncode != 0:
    raise RuntimeError(f"the captioner failed: {' '.join(command)} (it needs torch and "
                       f"transformers: set --captioner_python to a Python that has them)")
  return out


def add_captioner_flags(parser: argparse.ArgumentParser) -> None:
  """The flags this captioner and its Beam stage (beam_caption.py) share:
  the model, the inputs and their columns, and how to generate."""
  parser.add_argument("--model", required=True, help="a local save_pretrained directory")
  parser.add_argument("--input", action="append", required=True)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--max_new_tokens", type=int, default=30)
  parser.add_argument("--num_beams", type=int, default=1)
  parser.add_argument("--prompt", default="", help="text prefix, for models that take one")
  parser.add_argument("--device", default="cpu")
  parser.add_argument("--image_column", default="image")
  parser.add_argument("--text_column", default="text")
  parser.add_argument("--key_column", default="key")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  add_captioner_flags(parser)
  parser.add_argument("--out", required=True, help="captions JSONL (appended to)")
  parser.add_argument("--no_progress", action="store_true",
                      help="no progress bar (there is none anyway when stderr is not a terminal)")
  args = parser.parse_args(argv)
  stats = run(args.model, args.input, args.out,
              Columns(args.key_column, args.image_column, args.text_column), args.batch_size,
              args.max_new_tokens, args.num_beams, args.prompt, args.device,
              disable_progress=args.no_progress)
  print(json.dumps(stats))


if __name__ == "__main__":
  main()
