"""The package as users install it: pyproject.toml lists every package and
matches the requirements files; the shipped configs and prompts are found
through the package; a wheel installs and its commands run from elsewhere."""

import glob
import os
import re
import shutil
import site
import subprocess
import sys
import tomllib

import pytest

from alip_jax import console
from alip_jax.evaluation import prompts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pyproject():
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)


def requirement_lines(name):
  """The requirements of a requirements file, less comments and `-r` lines."""
  with open(os.path.join(ROOT, name)) as f:
    lines = [line.split("#")[0].strip() for line in f]
  return [line for line in lines if line and not line.startswith("-r")]


def package_name(requirement):
  return re.split(r"[=<>!~\[ ;]", requirement)[0].lower().replace("_", "-")


def test_pyproject_lists_every_package_under_alip_jax():
  found = {os.path.relpath(os.path.dirname(p), ROOT).replace(os.sep, ".")
           for p in glob.glob(os.path.join(ROOT, "alip_jax", "**", "__init__.py"), recursive=True)}
  listed = set(pyproject()["tool"]["setuptools"]["packages"])
  assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
  assert listed - found == {"alip_jax.configs"}
  assert pyproject()["tool"]["setuptools"]["package-dir"] == {"alip_jax.configs": "configs"}


def test_extras_match_the_requirements_files():
  project = pyproject()["project"]
  extras = project["optional-dependencies"]
  assert pyproject()["tool"]["setuptools"]["dynamic"]["dependencies"] == {
      "file": ["requirements.txt"]}
  assert sorted(extras["cloud"]) == sorted(requirement_lines("requirements-cloud.txt"))
  assert sorted(extras["test"]) == sorted(requirement_lines("requirements-test.txt"))
  # The torch venv is Python 3.11 and may pin older shared packages (numpy):
  # the extra takes the rest, at the same versions.
  runtime = {package_name(r) for r in requirement_lines("requirements.txt")}
  torch_only = [r for r in requirement_lines("requirements-torch.txt")
                if package_name(r) not in runtime]
  assert sorted(extras["torch"]) == sorted(torch_only)
  assert extras["cuda"] == ["jax[cuda13]"] and extras["tpu"] == ["jax[tpu]"]
  scripts = project["scripts"]
  assert {"alip-train", "alip-eval", "alip-build", "alip-export"} <= set(scripts)


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
  for name in ("pyproject.toml", "README.md", "LICENSE", "requirements.txt"):
    shutil.copy(os.path.join(ROOT, name), dest)
  for name in ("alip_jax", "configs"):
    shutil.copytree(os.path.join(ROOT, name), os.path.join(dest, name), ignore=ignore)


@pytest.mark.slow
def test_wheel_installs_and_its_commands_run_from_another_directory(tmp_path, tiny_corpus):
  from test_end_to_end import TINY_FLAGS
  source, wheels, venv, elsewhere = (tmp_path / n for n in ("src", "wheels", "venv", "elsewhere"))
  source.mkdir()
  elsewhere.mkdir()
  copy_sources(source)
  offline = ["--no-deps", "--no-index", "--disable-pip-version-check", "--quiet"]
  subprocess.run([sys.executable, "-m", "pip", "wheel", *offline, "--no-build-isolation",
                  "-w", str(wheels), str(source)], check=True, timeout=300)
  (wheel,) = glob.glob(str(wheels / "alip_jax-*.whl"))
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
  subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                  "install", *offline, wheel], check=True, timeout=300)
  # The dependencies come from this venv's site-packages, after the new
  # venv's own (a path added by a .pth file runs no .pth files of its own, so
  # this checkout's editable install stays out).
  (new_site,) = glob.glob(str(venv / "lib" / "python3*" / "site-packages"))
  with open(os.path.join(new_site, "deps.pth"), "w") as f:
    f.write("\n".join(site.getsitepackages()) + "\n")

  def run(*command):
    return subprocess.run([str(venv / "bin" / command[0]), *command[1:]], cwd=elsewhere,
                          capture_output=True, text=True, timeout=600)

  where = run("python", "-c", "import alip_jax, alip_jax.configs.demo as d, "
              "alip_jax.evaluation.prompts as p; print(alip_jax.__file__, d.__file__); "
              "assert p.read('templates.txt') and p.read('cifar10_classes.txt')")
  assert where.returncode == 0, where.stderr[-3000:]
  assert all(path.startswith(new_site) for path in where.stdout.split()), where.stdout
  for command, flag in (("alip-train", "--workdir"), ("alip-eval", "--checkpoint"),
                        ("alip-demo", "--variants"), ("alip-build", "--captions"),
                        ("alip-export", "--format"), ("alip-score", "--report"),
                        ("alip-filter", "--top_fraction")):
    shown = run(command, "--help")
    assert flag in shown.stdout, (command, shown.stdout[-2000:], shown.stderr[-2000:])
  # The README's paths, relative to the working directory.
  train = run("alip-train", "--config", "configs/demo.py", "--workdir", "w", *TINY_FLAGS,
              f"--config.data.dir={tiny_corpus}", "--config.train.steps=1")
  assert train.returncode == 0, train.stderr[-3000:]
  assert "using the shipped" in train.stderr and "i2t_R@1=" in train.stdout
  assert os.path.isdir(elsewhere / "w" / "checkpoints" / "1")


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
