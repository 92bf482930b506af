"""Export a trained or imported model for other tools: the `alip-export` command.

  alip-export runs/alip /tmp/alip_hf                  # an HF transformers CLIPModel directory
  alip-export runs/alip /tmp/alip_oc --step 300 --format open_clip

A thin front over `alip_jax.export(alip_jax.load(SOURCE), OUT, format=...)`:
SOURCE is anything `alip_jax.load` reads (a workdir, a checkpoint step, an HF
CLIP directory, an OpenAI state dict); the formats are the ones
`alip_jax.export` writes.
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="alip-export", description=__doc__.split("\n")[0])
  parser.add_argument("source", help="a workdir, checkpoint step, HF CLIP directory or "
                      "OpenAI state dict (anything alip_jax.load reads)")
  parser.add_argument("out", help="the directory to write")
  parser.add_argument("--format", default="hf", choices=["hf", "open_clip"],
                      help="hf: a transformers CLIPModel directory (default); open_clip: "
                      "open_clip_config.json + open_clip_model.safetensors")
  parser.add_argument("--repo_id", help="the hub name the export will be uploaded as "
                      "(open_clip's hf-hub: tokenizer loading reads it from the config)")
  parser.add_argument("--step", type=int, help="checkpoint step of a workdir (default: newest)")
  parser.add_argument("--tokenizer", help="a tokenizer file, when SOURCE has none beside it")
  args = parser.parse_args(argv)
  import alip_jax  # after parsing: --help does not start JAX
  model = alip_jax.load(args.source, step=args.step, tokenizer=args.tokenizer)
  alip_jax.export(model, args.out, format=args.format, repo_id=args.repo_id)
  print(f"exported {args.source} (step {model.step}) as {args.format!r} to {args.out}")


if __name__ == "__main__":
  main()
