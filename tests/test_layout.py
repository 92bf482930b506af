"""The package's shape, checked: imports point downhill through the layers
below, no block of six or more lines is repeated within alip_jax/, and no
module runs over 300 lines without saying why at its top."""

import ast
import collections
import os
import re

from conftest import ROOT

PACKAGE = os.path.join(ROOT, "alip_jax")

# Lowest first. A module may import what sits in a lower layer, or in its own
# group; an import into another group of its own layer or into a higher layer
# is uphill. A module belongs to the group with the longest prefix naming it.
# data, models and losses are one layer of three groups: the issue orders
# data below models and losses, and neither of those imports data (nor the
# other), so none of the three imports another.
LAYERS = [
    {"foundation": ("alip_jax.fileio", "alip_jax.mesh", "alip_jax.console", "alip_jax.progress",
                    "alip_jax.rundir",
                    "alip_jax.accelerators", "alip_jax.distributed", "alip_jax.hub",
                    "alip_jax.config_check", "alip_jax.configs.base", "alip_jax.phase_times",
                    "alip_jax.extras")},
    {"data": ("alip_jax.data",), "models": ("alip_jax.models",), "losses": ("alip_jax.losses",)},
    {"tools": ("alip_jax.tools",), "optim": ("alip_jax.optim", "alip_jax.accumulation")},
    {"state": ("alip_jax.step", "alip_jax.state", "alip_jax.checkpointing",
               "alip_jax.downweighted")},  # downweighted: its top-k runs in the step
    {"uses of a model": ("alip_jax.evaluation", "alip_jax.monitoring",
                         "alip_jax.exporting", "alip_jax.loading",
                         "alip_jax")},  # the package itself: alip_jax.load, alip_jax.export
    {"train": ("alip_jax.train",)},
    {"commands": ("alip_jax.main", "alip_jax.evaluate", "alip_jax.demo", "alip_jax.score",
                  "alip_jax.filter", "alip_jax.export_cli", "alip_jax.curation",
                  "alip_jax.experiments", "alip_jax.benchmarks", "alip_jax.configs",
                  "alip_jax.scripts", "alip_jax.launch_scripts", "alip_jax.launch")},
]
MAX_LINES = 300
REPEATED_LINES = 6


def sources():
  """(module name, path) of every module: alip_jax/, and configs/ (installed
  as alip_jax.configs)."""
  for top, name in ((PACKAGE, "alip_jax"), (os.path.join(ROOT, "configs"), "alip_jax.configs")):
    for directory, subdirs, files in os.walk(top):
      subdirs[:] = sorted(d for d in subdirs if d != "__pycache__" and not (
          directory == PACKAGE and d == "configs"))  # a checkout's link to configs/
      for file in sorted(f for f in files if f.endswith(".py")):
        path = os.path.join(directory, file)
        parts = os.path.relpath(path, top)[:-3].split(os.sep)
        yield ".".join([name, *parts[:-1]] + ([] if parts[-1] == "__init__" else parts[-1:])), path


def place(module):
  """(layer index, group name) of `module`, or None."""
  best = None
  for index, groups in enumerate(LAYERS):
    for group, prefixes in groups.items():
      for prefix in prefixes:
        # "alip_jax" is the package's own __init__ only: a new top-level
        # module must be placed in a layer, not fall into this one.
        inside = prefix != "alip_jax" and module.startswith(prefix + ".")
        if (module == prefix or inside) and (
            best is None or len(prefix) > best[0]):
          best = (len(prefix), index, group)
  return best and best[1:]


def imports(module, path, modules):
  """(imported module, line) of every import in the file, at module level
  and inside functions, resolved to a module of the package."""
  is_package = path.endswith("__init__.py")
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parent = module.split(".")
        parent = parent[:len(parent) - node.level + is_package]
        base = ".".join(parent + ([base] if base else []))
      names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
               for alias in node.names]
    else:
      continue
    for name in names:
      if name == "configs" or name.startswith("configs."):
        yield name, node.lineno  # the checkout's configs/: not there when installed
        continue
      while name and name not in modules:  # `import alip_jax.data.x as y`, attributes
        name = name.rpartition(".")[0]
      if name and name.startswith("alip_jax"):
        yield name, node.lineno


def test_imports_point_downhill():
  modules = dict(sources())
  unplaced = sorted(m for m in modules if place(m) is None)
  uphill = []
  for module, path in modules.items():
    for imported, line in imports(module, path, modules):
      if not imported.startswith("alip_jax"):
        uphill.append(f"{module} → {imported} (outside the package: import alip_jax.configs), "
                      f"{os.path.relpath(path, ROOT)}:{line}")
        continue
      if module.startswith(imported + ".") or place(module) is None or place(imported) is None:
        continue  # a package's own __init__ is no edge
      (layer, group), (to_layer, to_group) = place(module), place(imported)
      if to_layer > layer or (to_layer == layer and to_group != group):
        uphill.append(f"{module} ({group}) → {imported} ({to_group}), "
                      f"{os.path.relpath(path, ROOT)}:{line}")
  assert not unplaced, ("modules in no layer of tests/test_layout.py's LAYERS: "
                        + ", ".join(unplaced))
  assert not uphill, f"{len(uphill)} imports point uphill:\n" + "\n".join(sorted(uphill))


def skipped_lines(tree) -> set:
  """Line numbers of imports and docstrings."""
  skip = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      skip.update(range(node.lineno, node.end_lineno + 1))
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      body = node.body
      if body and isinstance(body[0], ast.Expr) and isinstance(
          getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
        skip.update(range(body[0].lineno, body[0].end_lineno + 1))
  return skip


def code_lines(path):
  """[(line number, line with white space folded)] of code that counts:
  not blank, not a comment, not only punctuation, no import, no docstring."""
  with open(path) as f:
    text = f.read()
  skip = skipped_lines(ast.parse(text, path))
  out = []
  for number, line in enumerate(text.splitlines(), 1):
    folded = " ".join(line.split())
    if number in skip or not folded or folded.startswith("#") or not re.search(r"\w", folded):
      continue
    out.append((number, folded))
  return out


def test_no_block_of_six_lines_is_repeated():
  places = collections.defaultdict(list)  # the six lines → [(file, first, last)]
  for module, path in sources():
    if not path.startswith(PACKAGE + os.sep):
      continue
    lines = code_lines(path)
    for i in range(len(lines) - REPEATED_LINES + 1):
      window = lines[i:i + REPEATED_LINES]
      places[tuple(text for _, text in window)].append(
          (os.path.relpath(path, ROOT), window[0][0], window[-1][0]))
  # Neighbouring windows of one repeated block merge into one row.
  rows = {}
  for block, where in places.items():
    where = [w for k, w in enumerate(where) if not any(  # not overlapping itself
        w[0] == v[0] and w[1] <= v[2] for v in where[:k])]
    if len(where) > 1:
      key = tuple((file, first) for file, first, _ in where)
      rows[key] = where
  merged = []
  for key in sorted(rows, key=lambda k: (k[0][0], k[0][1])):
    where = rows[key]
    last = merged[-1] if merged else None
    if last and len(last) == len(where) and all(
        a[0] == b[0] and b[1] <= a[2] for a, b in zip(last, where)):
      merged[-1] = [(a[0], a[1], max(a[2], b[2])) for a, b in zip(last, where)]
    else:
      merged.append(list(where))
  assert not merged, f"{len(merged)} blocks of {REPEATED_LINES}+ lines stand twice or more:\n" + (
      "\n".join(" = ".join(f"{f}:{a}-{b}" for f, a, b in where) for where in merged))


def test_no_long_module_without_a_reason():
  long = []
  for module, path in sources():
    with open(path) as f:
      text = f.read()
    count = text.count("\n")
    docstring = ast.get_docstring(ast.parse(text, path)) or ""
    if count > MAX_LINES and not re.search(rf"over {MAX_LINES} lines because", docstring, re.I):
      long.append(f"{os.path.relpath(path, ROOT)}: {count} lines")
  assert not long, (f"modules over {MAX_LINES} lines whose docstring does not say why "
                    f"(\"Over {MAX_LINES} lines because …\"):\n" + "\n".join(long))


# A workdir's files and their paths belong to alip_jax/rundir.py. Commands
# whose --workdir is a directory of several runs (not one run) name their
# own sub-directories.
RUNDIR_MODULE = "alip_jax.rundir"
DIRECTORY_OF_RUNS = ("alip_jax.experiments",)


def _names_a_workdir(node) -> bool:
  name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")
  return "workdir" in name.lower()


def paths_under_a_workdir(tree):
  """Line numbers where a path under a workdir is built: `join(workdir, …)`
  (os.path.join, fileio.join, …) or an f-string "{workdir}/…"."""
  for node in ast.walk(tree):
    if isinstance(node, ast.Call) and node.args and getattr(
        node.func, "attr", getattr(node.func, "id", "")) in ("join", "joinpath"):
      if _names_a_workdir(node.args[0]):
        yield node.lineno
    elif isinstance(node, ast.JoinedStr) and len(node.values) > 1:
      first, second = node.values[0], node.values[1]
      if isinstance(first, ast.FormattedValue) and _names_a_workdir(first.value) and isinstance(
          second, ast.Constant) and str(second.value).startswith("/"):
        yield node.lineno


def test_only_the_run_directory_module_builds_paths_in_a_workdir():
  found = []
  for module, path in sources():
    if module == RUNDIR_MODULE or module.startswith(DIRECTORY_OF_RUNS):
      continue
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    found += [f"{os.path.relpath(path, ROOT)}:{line}" for line in paths_under_a_workdir(tree)]
  assert not found, ("paths joined under a workdir outside alip_jax/rundir.py (ask it: add the "
                     "file there):\n" + "\n".join(found))
