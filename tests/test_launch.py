"""launch/tpu_pod.sh against a stand-in `gcloud` that records each call,
answers `describe`, keeps what `scp` sends in a fake worker's home, and
syntax-checks every command sent with `ssh --command` (running it there
when asked)."""

import os
import shlex
import subprocess
import tarfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAKE_GCLOUD = r"""#!/usr/bin/env bash
{ printf '%s\x1f' "$@"; printf '\x1e'; } >> "$FAKE_LOG"
args="$*"
case "$args" in
  *"tpu-vm describe"*) [ "${FAKE_TPU_EXISTS:-0}" = 1 ] ;;
  *"queued-resources describe"*)
    echo >> "$FAKE_LOG.polls"
    if [ "$(wc -l < "$FAKE_LOG.polls")" -ge 2 ]; then echo ACTIVE; else echo WAITING_FOR_RESOURCES; fi ;;
  *"tpu-vm scp"*) cp "$5" "$FAKE_HOME/${6#*:}" ;;
  *"tpu-vm ssh"*)
    for a in "$@"; do case "$a" in --command=*) cmd="${a#--command=}" ;; esac; done
    bash -n -c "$cmd" || exit 3
    if [ "${FAKE_RUN:-0}" = 1 ]; then (cd "$FAKE_HOME" && bash -c "$cmd"); fi ;;
esac
"""


def run_script(tmp_path, root=ROOT, **env):
  bin_dir, home = tmp_path / "bin", tmp_path / "worker_home"
  bin_dir.mkdir(exist_ok=True)
  home.mkdir(exist_ok=True)
  (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
  (bin_dir / "gcloud").chmod(0o755)
  log = tmp_path / "gcloud.log"
  full_env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(log),
              "FAKE_HOME": str(home), "TPU_NAME": "alip-pod", "ZONE": "us-west4-a",
              "CONFIG": "configs/demo.py", "WORKDIR": "gs://bucket/runs/demo",
              "POLL_SECONDS": "0", **env}
  result = subprocess.run(["bash", "launch/tpu_pod.sh", "--config.train.steps=5",
                           "--config.model.image=B/16"], cwd=root, env=full_env,
                          capture_output=True, text=True, timeout=120)
  calls = [c.split("\x1f")[:-1] for c in log.read_text().split("\x1e")[:-1]] if log.exists() else []
  return result, calls, home


def command_of(call):
  return next(a.removeprefix("--command=") for a in call if a.startswith("--command="))


@pytest.mark.skipif(not os.path.exists(os.path.join(ROOT, ".git")), reason="needs the git checkout")
def test_tpu_pod_creates_ships_installs_and_trains_on_all_workers(tmp_path):
  result, calls, home = run_script(
      tmp_path, ACCELERATOR_TYPE="v5litepod-32", RUNTIME_VERSION="v2-alpha-tpuv5-lite",
      SPOT="1", DATA_BUCKET="my-data", DATA_SUBDIR="yfcc", FAKE_RUN="0")
  assert result.returncode == 0, result.stderr
  verbs = [" ".join(c[2:4]) for c in calls]
  assert verbs == ["tpu-vm describe", "queued-resources create", "queued-resources describe",
                   "queued-resources describe", "tpu-vm scp", "tpu-vm ssh", "tpu-vm ssh",
                   "tpu-vm ssh"]
  create = calls[1]
  assert {"--node-id=alip-pod", "--accelerator-type=v5litepod-32", "--spot",
          "--runtime-version=v2-alpha-tpuv5-lite", "--zone=us-west4-a"} <= set(create)
  assert all("--worker=all" in c for c in calls[4:])
  install, train = command_of(calls[6]), command_of(calls[7])
  assert "-c constraints.txt -e '.[cloud]'" in install and "'jax[tpu]==0.12.0.1'" in install
  train_argv = shlex.split(train.split(" cd alip_jax\n", 1)[1].replace("\\\n", " "))
  assert train_argv == [".venv/bin/python", "-m", "alip_jax.main", "--config", "configs/demo.py",
                        "--workdir", "gs://bucket/runs/demo", "--config.distributed.auto=True",
                        "--config.data.dir=/tmp/alip_data/yfcc", "--config.train.steps=5",
                        "--config.model.image=B/16"]
  assert "gcsfuse -o ro --implicit-dirs my-data /tmp/alip_data" in train


def test_tpu_pod_reuses_the_tpu_and_ships_the_committed_tree(tmp_path):
  """In a checkout with an uncommitted edit and an untracked file, the
  worker gets exactly the committed files, with their committed contents."""
  checkout = tmp_path / "checkout"
  (checkout / "launch").mkdir(parents=True)
  (checkout / "alip_jax").mkdir()
  with open(os.path.join(ROOT, "launch", "tpu_pod.sh")) as f:
    (checkout / "launch" / "tpu_pod.sh").write_text(f.read())
  (checkout / "alip_jax" / "main.py").write_text("# committed\n")
  (checkout / "requirements.txt").write_text("committed\n")

  def git(*args):
    subprocess.run(["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@t",
                    *args], check=True, capture_output=True)

  git("init", "-q")
  git("add", ".")
  git("commit", "-q", "-m", "committed tree")
  (checkout / "requirements.txt").write_text("edited, not committed\n")
  (checkout / "untracked.txt").write_text("never added\n")
  result, calls, home = run_script(tmp_path, root=checkout, FAKE_TPU_EXISTS="1", FAKE_RUN="1",
                                   STEPS="create ship")
  assert result.returncode == 0, result.stderr
  assert "reusing TPU VM alip-pod" in result.stdout
  assert [" ".join(c[2:4]) for c in calls] == ["tpu-vm describe", "tpu-vm scp", "tpu-vm ssh"]
  with tarfile.open(home / "alip_jax.tar.gz") as archive:
    files = {m.name for m in archive.getmembers() if m.isfile()}
  assert files == {"launch/tpu_pod.sh", "alip_jax/main.py", "requirements.txt"}
  # The worker's copy is unpacked, with the committed contents.
  assert (home / "alip_jax" / "alip_jax" / "main.py").read_text() == "# committed\n"
  assert (home / "alip_jax" / "requirements.txt").read_text() == "committed\n"


def test_tpu_pod_refuses_a_local_workdir_and_a_missing_tpu_type(tmp_path):
  result, calls, _ = run_script(tmp_path, WORKDIR="/tmp/run")
  assert result.returncode == 2 and "use gs://" in result.stderr and not calls
  result, calls, _ = run_script(tmp_path)
  assert result.returncode != 0 and "set ACCELERATOR_TYPE" in result.stderr
