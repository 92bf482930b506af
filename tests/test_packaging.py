"""The package as users install it: pyproject.toml lists every package and
matches the requirements files; the shipped configs and prompts are found
through the package; a wheel installs and its commands run from elsewhere."""

import glob
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from alip_jax import console
from alip_jax.evaluation import prompts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pyproject():
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)


def test_pyproject_lists_every_package_under_alip_jax():
  found = {os.path.relpath(os.path.dirname(p), ROOT).replace(os.sep, ".")
           for p in glob.glob(os.path.join(ROOT, "alip_jax", "**", "__init__.py"), recursive=True)}
  listed = set(pyproject()["tool"]["setuptools"]["packages"])
  assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
  assert listed - found == {"alip_jax.configs", "alip_jax.launch"}
  assert pyproject()["tool"]["setuptools"]["package-dir"] == {"alip_jax.configs": "configs",
                                                               "alip_jax.launch": "launch"}


def constraint_pins():
  """constraints.txt as {package: exact version}."""
  pins = {}
  with open(os.path.join(ROOT, "constraints.txt")) as f:
    for line in f:
      line = line.split("#")[0].strip()
      if line:
        requirement = Requirement(line)
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"constraints.txt: {line!r} is not an exact pin"
        pins[canonicalize_name(requirement.name)] = spec.version
  return pins


def test_dependencies_are_ranges_that_the_constraints_pin():
  """pyproject.toml declares ranges (a library installs beside others) whose
  lower bound is the version we test; constraints.txt pins exactly that
  version, for the core, every extra and the torch venv."""
  project = pyproject()["project"]
  pins = constraint_pins()
  declared = [*project["dependencies"]] + [
      r for extra, rs in project["optional-dependencies"].items()
      if extra not in ("cuda", "cuda12", "tpu") for r in rs]
  for line in declared:
    requirement = Requirement(line)
    name = canonicalize_name(requirement.name)
    assert name in pins, f"{line}: pin the version we test in constraints.txt"
    lower = [s.version for s in requirement.specifier if s.operator == ">="]
    exact = [s.version for s in requirement.specifier if s.operator == "=="]
    if name == "libtpu":  # must match jax's version, as jax[tpu] pins it
      assert exact == [pins[name]], line
      continue
    assert lower == [pins[name]], f"{line}: the lower bound is the tested {pins[name]}"
    assert not exact, f"{line}: a library declares a range, not an exact version"
    assert requirement.specifier.contains(pins[name]), line
  core = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
  assert not core & {"apache-beam", "tensorflow-datasets", "matplotlib", "torch", "pyarrow"}
  extras = project["optional-dependencies"]
  assert {"build", "tfds", "plots", "cloud", "torch", "open_clip", "test"} <= set(extras)
  assert extras["cuda"] == ["jax[cuda13]"] and extras["tpu"] == ["jax[tpu]"]
  # The torch venv: the [torch] and [open_clip] extras plus the packages the
  # tests share with the core, each pinned (torch with its torchvision).
  with open(os.path.join(ROOT, "requirements-torch.txt")) as f:
    torch_venv = {canonicalize_name(line.split("#")[0].strip()) for line in f
                  if line.split("#")[0].strip()}
  wanted = {canonicalize_name(Requirement(r).name) for r in extras["torch"] + extras["open_clip"]}
  assert wanted <= torch_venv and "torchvision" in torch_venv
  assert torch_venv <= set(pins), torch_venv - set(pins)
  # Every pinned package is declared somewhere, or is a transitive one we
  # pin on purpose (the comments in constraints.txt say why).
  on_purpose = {"jaxlib", "protobuf", "torchvision", "timm", "ftfy", "regex", "wcwidth"}
  assert set(pins) - {canonicalize_name(Requirement(r).name) for r in declared} <= on_purpose
  scripts = project["scripts"]
  assert {"alip-train", "alip-eval", "alip-build", "alip-export"} <= set(scripts)


TORCH_VENV_DISTS = """
import importlib.metadata as md, json
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
out = {}
for d in md.distributions():
  needs = []
  for line in d.requires or []:
    r = Requirement(line)
    if r.marker is None or r.marker.evaluate({"extra": ""}):
      needs.append([r.name, str(r.specifier)])
  out[d.metadata["Name"]] = [d.version, needs]
print(json.dumps(out))
"""


@pytest.mark.skipif(not os.environ.get("ALIP_TORCH_PYTHON"), reason="no torch venv "
                    "(ALIP_TORCH_PYTHON; tests/run.sh makes it)")
def test_alip_jax_installs_beside_open_clip_and_transformers():
  """.venv-torch holds open_clip_torch, transformers, torch and torchvision
  at constraints.txt's versions with `pip check` clean; the packages they
  share with alip-jax's core (huggingface_hub, tokenizers, safetensors,
  numpy, pillow, tqdm, …) are at versions both sides accept: each side's
  declared requirements hold for the other side's installed versions."""
  torch_python = os.environ["ALIP_TORCH_PYTHON"]
  checked = subprocess.run([torch_python, "-m", "pip", "check"], capture_output=True, text=True,
                           timeout=300)
  assert checked.returncode == 0, checked.stdout + checked.stderr
  listed = subprocess.run([torch_python, "-c", TORCH_VENV_DISTS], capture_output=True,
                          text=True, timeout=300, check=True)
  torch_side = {canonicalize_name(k): v for k, v in json.loads(listed.stdout).items()}
  ours = {name: dist.version for name, dist in
          installed_closure(pyproject()["project"]["dependencies"]).items()}
  assert {"open-clip-torch", "transformers", "torch", "torchvision"} <= set(torch_side)
  shared = set(ours) & set(torch_side)
  assert {"huggingface-hub", "tokenizers", "safetensors", "numpy", "pillow"} <= shared
  for name, (version, needs) in torch_side.items():
    for needed, specifier in needs:
      needed = canonicalize_name(needed)
      if needed in ours:
        assert SpecifierSet(specifier).contains(ours[needed], prereleases=True), (
            f"{name} {version} needs {needed}{specifier}; alip-jax's venv has {ours[needed]}")
  for line in pyproject()["project"]["dependencies"]:
    requirement = Requirement(line)
    name = canonicalize_name(requirement.name)
    if name in torch_side:
      assert requirement.specifier.contains(torch_side[name][0], prereleases=True), (
          f"alip-jax needs {line}; the torch venv resolved {name} {torch_side[name][0]}")
  for name in shared & set(constraint_pins()):
    assert torch_side[name][0] == ours[name] == constraint_pins()[name], name


def test_license_and_citation_match_the_package():
  with open(os.path.join(ROOT, "LICENSE")) as f:
    license_text = f.read()
  assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
  assert "END OF TERMS AND CONDITIONS" in license_text  # the full text, not a notice
  with open(os.path.join(ROOT, "CITATION.cff")) as f:
    citation = f.read()
  assert re.search(r"^version: (\S+)$", citation, re.M)[1] == pyproject()["project"]["version"]
  assert "ALIP: Adaptive Language-Image Pre-training with Synthetic Caption" in citation
  assert "arXiv:2308.08428" in citation and "ICCV 2023" in citation


def test_shipped_config_replaces_a_missing_configs_path(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  argv = console.with_packaged_config(["alip-train", "--config", "configs/demo.py:clip_raw",
                                       "--workdir", "w"])
  shipped, variant = argv[2].rsplit(":", 1)
  assert variant == "clip_raw" and os.path.isfile(shipped)
  assert os.path.samefile(shipped, os.path.join(ROOT, "configs", "demo.py"))
  equals_form = console.with_packaged_config(["x", "--config=configs/alip_yfcc15m.py:B/16"])
  assert equals_form[1].startswith("--config=/") and equals_form[1].endswith(
      "alip_yfcc15m.py:B/16")
  for kept in (["x", "--config", "configs/nope.py"], ["x", "--config", "my/own.py"],
               ["x", "--workdir", "configs/demo.py"]):
    assert console.with_packaged_config(kept) == kept
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "demo.py").write_text("")
  local = ["x", "--config", "configs/demo.py"]  # a file here wins over the shipped one
  assert console.with_packaged_config(local) == local


def test_every_command_with_a_config_flag_resolves_the_shipped_configs(tmp_path):
  """Each command whose usage is `--config configs/X.py` (alip-train and the
  benchmarks) passes its argv through console.with_packaged_config before
  absl reads the file, so an installed package runs them from anywhere."""
  commands = []
  for path in glob.glob(os.path.join(ROOT, "alip_jax", "**", "*.py"), recursive=True):
    with open(path) as f:
      text = f.read()
    if re.search(r"--config[ =]configs/", text) and path != console.__file__:
      commands.append(os.path.relpath(path, ROOT))
      assert "with_packaged_config(sys.argv)" in text, (
          f"{commands[-1]} takes --config configs/…: run its argv through "
          f"console.with_packaged_config as alip_jax/main.py does")
  assert len(commands) >= 5, commands
  shown = subprocess.run([sys.executable, "-m", "alip_jax.benchmarks.train_step", "--config",
                          "configs/demo.py:clip_raw", "--helpshort"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
  # absl's --helpshort exits with 1 after the flags (--config among them) parsed.
  assert "using the shipped" in shown.stderr and "--steps" in shown.stdout, shown.stderr[-2000:]


def test_alip_build_help_is_quiet():
  """No "apitools not found" line from Beam's BigQuery client on import."""
  shown = subprocess.run([sys.executable, "-m", "alip_jax.tools.build", "--help"],
                         capture_output=True, text=True, timeout=300)
  assert shown.returncode == 0 and "--captions" in shown.stdout
  assert shown.stderr == "", shown.stderr


def test_prompts_are_read_from_the_package():
  templates = prompts.read("templates.txt")
  assert templates and all("{}" in t for t in templates)
  assert len(prompts.read("cifar10_classes.txt")) == 10
  assert prompts.read("no_such_set_classes.txt") is None
  # OpenAI's ImageNet prompts and names (as open_clip ships them), CIFAR-100's labels.
  imagenet_templates = prompts.read("imagenet2012_templates.txt")
  assert len(imagenet_templates) == 80 and all(t.count("{}") == 1 for t in imagenet_templates)
  imagenet = prompts.read("imagenet2012_classes.txt")
  assert len(imagenet) == 1000 and imagenet[:2] == ["tench", "goldfish"]
  cifar100 = prompts.read("cifar100_classes.txt")
  assert len(cifar100) == 100 and cifar100[1] == "aquarium fish" and cifar100[-1] == "worm"
  assert prompts.parse_names("# comment\n\n a {} \nb {}\n") == ["a {}", "b {}"]


def test_the_package_reaches_no_file_outside_itself():
  """An installed wheel has only alip_jax/: no module may import the
  checkout's top-level configs/ or walk up out of the package by path
  (package data goes beside its module, read through importlib.resources)."""
  walking_up = re.compile(r"^\s*(from|import) configs\b|dirname\(os\.path\.dirname\(|"
                          r"\"\.\.\"|'\.\.'|\.\./", re.M)
  checked = 0
  for path in glob.glob(os.path.join(ROOT, "alip_jax", "**", "*.py"), recursive=True):
    if os.sep + "configs" + os.sep in path:  # the checkout's symlink to configs/
      continue
    with open(path) as f:
      found = walking_up.search(f.read())
    assert not found, f"{os.path.relpath(path, ROOT)} reaches outside the package: {found[0]!r}"
    checked += 1
  assert checked > 50


def copy_sources(dest):
  """What the build reads, without the checkout's build outputs."""
  ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
  for name in ("pyproject.toml", "README.md", "LICENSE"):
    shutil.copy(os.path.join(ROOT, name), dest)
  for name in ("alip_jax", "configs", "launch"):
    shutil.copytree(os.path.join(ROOT, name), os.path.join(dest, name), ignore=ignore)


def installed_closure(requirements: list[str]) -> dict:
  """The distributions installed here that `requirements` need, transitively
  (extras followed, markers evaluated): {name: importlib.metadata.Distribution}."""
  found, todo, seen = {}, [Requirement(r) for r in requirements], set()
  while todo:
    requirement = todo.pop()
    key = (canonicalize_name(requirement.name), frozenset(requirement.extras))
    if key in seen:
      continue
    seen.add(key)
    dist = importlib.metadata.distribution(requirement.name)
    found[key[0]] = dist
    for line in dist.requires or []:
      needed = Requirement(line)
      if needed.marker is None or any(needed.marker.evaluate({"extra": e})
                                      for e in ("", *requirement.extras)):
        todo.append(needed)
  return found


def core_venv(venv, wheel) -> str:
  """A venv holding the wheel and only the core's dependencies (hard links
  of this venv's installed files: no index, no download), checked by
  `pip check`. Returns its site-packages."""
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
  (new_site,) = glob.glob(str(venv / "lib" / "python3*" / "site-packages"))
  for dist in installed_closure(pyproject()["project"]["dependencies"]).values():
    for file in dist.files:
      source, dest = str(dist.locate_file(file)), os.path.join(new_site, file)
      if str(file).startswith("..") or not os.path.isfile(source):  # scripts in bin/
        continue
      os.makedirs(os.path.dirname(dest), exist_ok=True)
      try:
        os.link(source, dest)
      except OSError:  # another file system
        shutil.copy2(source, dest)
  pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
  subprocess.run([*pip, "install", "--no-deps", "--no-index", "--disable-pip-version-check",
                  "--quiet", wheel], check=True, timeout=300)
  checked = subprocess.run([*pip, "check"], capture_output=True, text=True, timeout=300)
  assert checked.returncode == 0, checked.stdout + checked.stderr
  return new_site


@pytest.mark.slow
def test_wheel_with_only_the_core_trains_exports_and_loads_from_another_directory(
    tmp_path, tiny_corpus):
  """The wheel in a venv with the core dependencies only (no Beam, TFDS,
  matplotlib, torch): its commands answer from another directory, a command
  that needs an extra names it, and a run trains, exports and loads back."""
  from test_end_to_end import TINY_FLAGS
  source, wheels, venv, elsewhere = (tmp_path / n for n in ("src", "wheels", "venv", "elsewhere"))
  source.mkdir()
  elsewhere.mkdir()
  copy_sources(source)
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--quiet",
                  "--disable-pip-version-check", "--no-build-isolation", "-w", str(wheels),
                  str(source)], check=True, timeout=300)
  (wheel,) = glob.glob(str(wheels / "alip_jax-*.whl"))
  new_site = core_venv(venv, wheel)

  def run(*command):
    return subprocess.run([str(venv / "bin" / command[0]), *command[1:]], cwd=elsewhere,
                          capture_output=True, text=True, timeout=600)

  where = run("python", "-c", "import alip_jax, alip_jax.configs.demo as d, "
              "alip_jax.evaluation.prompts as p; print(alip_jax.__file__, d.__file__); "
              "assert p.read('templates.txt') and p.read('cifar10_classes.txt')\n"
              "import importlib.util as u\n"
              "for m in ('apache_beam', 'tensorflow_datasets', 'matplotlib', 'torch', 'pyarrow'):"
              " assert u.find_spec(m) is None, m")
  assert where.returncode == 0, where.stderr[-3000:]
  assert all(path.startswith(new_site) for path in where.stdout.split()), where.stdout
  for command, flag in (("alip-train", "--workdir"), ("alip-eval", "--checkpoint"),
                        ("alip-export", "--format"), ("alip-score", "--report")):
    shown = run(command, "--help")
    assert flag in shown.stdout, (command, shown.stdout[-2000:], shown.stderr[-2000:])
  # alip-filter runs on Beam: the [build] extra, like the builder.
  for command, extra in (("alip-build", "build"), ("alip-filter", "build"), ("alip-demo", "tfds")):
    refused = run(command, "--help")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr[-2000:]
    assert f"pip install 'alip-jax[{extra}]'" in refused.stderr, refused.stderr
  # The README's paths, relative to the working directory.
  train = run("alip-train", "--config", "configs/demo.py", "--workdir", "w", *TINY_FLAGS,
              f"--config.data.dir={tiny_corpus}", "--config.train.steps=1")
  assert train.returncode == 0, train.stderr[-3000:]
  assert "using the shipped" in train.stderr and "i2t_R@1=" in train.stdout
  assert os.path.isdir(elsewhere / "w" / "checkpoints" / "1")
  for fmt in ("hf", "open_clip"):
    exported = run("alip-export", "w", f"out_{fmt}", "--format", fmt)
    assert exported.returncode == 0, exported.stderr[-3000:]
    loaded = run("python", "-c", "import sys, alip_jax; m = alip_jax.load(sys.argv[1]); "
                 "e = m.encode_text(['a red circle']); print(e.shape)", f"out_{fmt}")
    assert loaded.returncode == 0 and loaded.stdout.startswith("(1, "), loaded.stderr[-3000:]
  # The launch scripts, from the package.
  launch = run("alip-launch", "proj")
  assert launch.returncode == 0, launch.stderr[-2000:]
  for name in ("slurm.sbatch", "tpu_pod.sh", "local.sh", "gpu_bench.sh"):
    written = elsewhere / "proj" / "launch" / name
    assert written.read_text() == open(os.path.join(ROOT, "launch", name)).read()
    assert os.access(written, os.X_OK)


def github_anchor(heading: str) -> str:
  """The anchor GitHub gives a markdown heading."""
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_into_the_method_page_resolve():
  method = os.path.join(ROOT, "docs", "METHOD.md")
  with open(method) as f:
    anchors = {github_anchor(line.lstrip("#")) for line in f if line.startswith("#")}
  checked = 0
  for path in [os.path.join(ROOT, "README.md"), *glob.glob(os.path.join(ROOT, "docs", "*.md"))]:
    with open(path) as f:
      text = f.read()
    for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", text):
      if target.endswith("METHOD.md") or (not target and path == method):
        assert anchor in anchors, f"{path}: no heading for #{anchor} in docs/METHOD.md"
        checked += 1
  assert checked >= 10


def test_no_file_points_outside_the_repository():
  """The method is documented in docs/METHOD.md: nothing may cite notes that
  users who clone the repository do not have."""
  banned = ("shared" + "/", "method" + "-specs")
  skip = {".git", ".venv", ".venv-torch", "runs", "workdirs", "data_cache", "build", "dist",
          "__pycache__", ".pytest_cache", "alip_jax.egg-info"}
  for directory, subdirs, files in os.walk(ROOT):
    subdirs[:] = [d for d in subdirs if d not in skip]
    for name in files:
      path = os.path.join(directory, name)
      try:
        with open(path, encoding="utf-8") as f:
          text = f.read()
      except (UnicodeDecodeError, OSError):
        continue
      for word in banned:
        assert word not in text, f"{os.path.relpath(path, ROOT)} mentions {word!r}"
