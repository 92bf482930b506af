"""A run's config checked once, at start-up, against configs/base.py.

`validate(config)` returns a copy in which every field of base.get_config()
exists: a field the config lacks (a short user config, the config.json of a
run from before the field existed) gets its default, and a log line says so.
A field base does not know (a typo) or of another type is an error that
names it, instead of a traceback (or a silently ignored setting) later.
"""

from __future__ import annotations

import copy
import difflib
import logging

import ml_collections

from alip_jax.configs import base

log = logging.getLogger(__name__)

# Fields taken whole, not field by field, with their legal types. Every other
# field has the type of its default, and a group of fields is filled field by field.
WHOLE_VALUES = {
    "model.image": (str, dict),   # a zoo name ('B/16') or the sizes
    "model.text": (str, dict),    # a zoo name ('B') or the sizes
    "loss.chunked": (str, bool),  # 'auto' | 'on' | 'off', or True / False
    "mesh": (dict,),              # axis sizes; an axis not given is 1 (alip_jax/mesh.py)
}


class ConfigError(ValueError):
  """Unknown or mistyped config fields; the message names each."""


def _type_name(value) -> str:
  return "dict" if isinstance(value, (dict, ml_collections.ConfigDict)) else type(value).__name__


def _has_type(value, allowed: tuple) -> bool:
  for t in allowed:
    if t is dict and isinstance(value, (dict, ml_collections.ConfigDict)):
      return True
    if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
      return True  # an int where a float is expected (lr=1) is fine
    if t is int and isinstance(value, bool):
      continue  # True is an int to Python, not to a config
    if t in (list, tuple) and isinstance(value, (list, tuple)):
      return True  # config.json reads tuples back as lists
    if isinstance(value, t):
      return True
  return False


def unknown_field_message(path: str, known) -> str:
  """'config.a.b: unknown field; did you mean config.a.c?' (`known`: the
  field names beside it)."""
  *parent, name = path.split(".")
  close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
  hint = f"; did you mean {'.'.join([*parent, close[0]])}?" if close else (
      f"; known fields there: {', '.join(sorted(known))}")
  return f"{path}: unknown field{hint}"


def _check(node, default, path: str, errors: list, filled: list) -> None:
  for key in list(node.keys()):
    field, value = f"{path}.{key}", node[key]
    if key not in default:
      errors.append(unknown_field_message(field, default.keys()))
      continue
    expected = default[key]
    whole = WHOLE_VALUES.get(field.removeprefix("config."))
    if whole:
      if not _has_type(value, whole):
        errors.append(f"{field}: expected {' or '.join(t.__name__ for t in whole)}, got "
                      f"{_type_name(value)} {value!r}")
    elif isinstance(expected, ml_collections.ConfigDict):
      if isinstance(value, (dict, ml_collections.ConfigDict)):
        _check(value, expected, field, errors, filled)
      else:
        errors.append(f"{field}: expected a group of fields (dict), got {_type_name(value)} "
                      f"{value!r}")
    elif not _has_type(value, (type(expected),)):
      errors.append(f"{field}: expected {type(expected).__name__}, got {_type_name(value)} "
                    f"{value!r}")
  for key in default.keys():
    if key not in node:
      node[key] = default[key]
      filled.append(f"{path}.{key}")


def check_overrides(argv) -> None:
  """Raises ConfigError for command-line overrides (`--config.train.stpes=3`)
  that name no field of base: absl would stop on them with a traceback."""
  default, errors = base.get_config(), []
  for arg in argv:
    if not arg.startswith(("--config.", "--noconfig.")):
      continue
    path = arg.split("=", 1)[0].split("config.", 1)[1]
    node, walked = default, "config"
    for name in path.split("."):
      if WHOLE_VALUES.get(walked.removeprefix("config.")):
        break  # inside a field taken whole (model.image.width): the config decides
      if not isinstance(node, ml_collections.ConfigDict) or name not in node:
        known = node.keys() if isinstance(node, ml_collections.ConfigDict) else ()
        errors.append(unknown_field_message(f"{walked}.{name}", known))
        break
      node, walked = node[name], f"{walked}.{name}"
  if errors:
    raise ConfigError("\n".join(errors))


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` with base's defaults filled in; raises ConfigError
  listing every unknown or mistyped field."""
  config = copy.deepcopy(config)
  config.unlock()  # command-line configs come locked; filling adds fields
  errors, filled = [], []
  _check(config, base.get_config(), "config", errors, filled)
  if errors:
    raise ConfigError(errors[0] if len(errors) == 1 else
                      f"{len(errors)} config errors:\n  " + "\n  ".join(errors))
  if filled:
    log.info("config: missing fields filled with their defaults (configs/base.py): %s",
             ", ".join(filled))
  return config
