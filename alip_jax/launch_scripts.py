"""`alip-launch DIR`: writes the launch scripts this package ships
(alip_jax.launch, the checkout's launch/) into DIR/launch/, executable, so an
installed package has them too; without DIR, lists them.

  alip-launch .          # ./launch/slurm.sbatch, ./launch/tpu_pod.sh, …
  sbatch launch/slurm.sbatch   (VENV=/path/to/your/venv)

The scripts `cd` to the directory above launch/ and use $VENV (default
.venv) there. tpu_pod.sh ships a git checkout of alip_jax to the TPU
workers (git archive): run it from a clone.
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import sys

# For a cluster; the checkout's demo.sh and env.sh install the checkout.
SCRIPTS = ("slurm.sbatch", "tpu_pod.sh", "local.sh", "gpu_bench.sh")


def shipped() -> dict[str, str]:
  """{file name: text} of the packaged launch scripts."""
  root = importlib.resources.files("alip_jax.launch")
  return {name: (root / name).read_text() for name in SCRIPTS}


def summary(text: str) -> str:
  """The script's first comment line (after the shebang): what it is."""
  lines = [line.lstrip("# ").strip() for line in text.splitlines()[1:3] if line.startswith("#")]
  return lines[0] if lines else ""


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="alip-launch", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("dir", nargs="?", help="writes the scripts into DIR/launch/")
  parser.add_argument("--overwrite", action="store_true", help="replace scripts already there")
  args = parser.parse_args(argv)
  scripts = shipped()
  if not args.dir:
    for name, text in scripts.items():
      print(f"{name:16s} {summary(text)}")
    return
  out = os.path.join(args.dir, "launch")
  os.makedirs(out, exist_ok=True)
  existing = [n for n in scripts if os.path.exists(os.path.join(out, n))]
  if existing and not args.overwrite:
    sys.exit(f"error: {out} already has {', '.join(existing)}; --overwrite replaces them")
  for name, text in scripts.items():
    path = os.path.join(out, name)
    with open(path, "w") as f:
      f.write(text)
    os.chmod(path, 0o755)
    print(f"wrote {path}")


if __name__ == "__main__":
  main()
