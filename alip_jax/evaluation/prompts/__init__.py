"""Class names and prompt templates shipped with the package.

Files here are package data, read through importlib.resources, so they are
found the same way in a checkout, an editable install and an installed wheel:
`templates.txt` (the default prompts), `<dataset>_classes.txt` and
`<dataset>_templates.txt` (used for that TFDS set when present).
"""

from __future__ import annotations

import importlib.resources


def parse_names(text: str) -> list[str]:
  """One entry per line; blank lines and '#' comment lines are ignored."""
  return [line.strip() for line in text.splitlines()
          if line.strip() and not line.startswith("#")]


def read(filename: str) -> list[str] | None:
  """The entries of the shipped file `filename`, or None if we ship none."""
  resource = importlib.resources.files(__name__) / filename
  if not resource.is_file():
    return None
  return parse_names(resource.read_text(encoding="utf-8"))
