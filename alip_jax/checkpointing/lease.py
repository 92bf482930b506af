"""One writer per directory: an exclusive, renewable writer lease.

A writer (the trainer's process 0 on its workdir; the scorer and the filter
on their --out) takes `<dir>/writer.lease` before it reads or writes anything
there, and a second writer is refused with one line naming the holder. Readers
(evaluate, load, export) never take it, and work while a writer runs.

- Taking it is an atomic create-if-absent: locally a complete temp file
  hard-linked to the lease name (`os.link` fails if the name exists, and the
  content is whole from the first instant); on gs:// an upload with the
  precondition `ifGenerationMatch=0` (gcsfs `pipe_file(mode="create")`,
  through fsspec, as etils.epath reaches buckets).
- Its content: host, boot id, pid, the process's start time, the time taken
  (`since`), the time last renewed, the purpose, and a random token.
- A daemon thread renews it every `renew_seconds`. Renewing and releasing
  first check that the file still carries our token (read, then write: not
  one atomic step, which neither fsspec nor gcsfs offers for overwrites; the
  window is only open to someone breaking a lease that is being renewed).
- Released on exit from `with`, and by atexit. A holder killed outright
  (kill -9, OOM) leaves its lease behind:
  * on the same machine (same host name and boot id) with its pid gone, or
    reused by a process started later, the holder is provably dead: the
    lease is taken over, with a warning naming the dead holder;
  * anywhere else it is *stale* once not renewed for `stale_seconds`
    (renewal interval × STALE_RENEWALS) and is broken only when asked
    (`--break_lease`), never silently; a lease renewed more recently than
    that is never broken.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid

from alip_jax import fileio

log = logging.getLogger(__name__)

LEASE_NAME = "writer.lease"
RENEW_SECONDS = 30.0
STALE_RENEWALS = 10  # a lease not renewed for this many intervals is stale


class LeaseHeld(RuntimeError):
  """Another writer holds (or held, and may still hold) the directory."""


def _boot_id() -> str:
  try:
    with open("/proc/sys/kernel/random/boot_id") as f:
      return f.read().strip()
  except OSError:
    return ""


def _process_start(pid: int) -> int | None:
  """The process's start time in clock ticks since boot (Linux), else None."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return int(f.read().rsplit(")", 1)[1].split()[19])
  except (OSError, IndexError, ValueError):
    return None


def _alive(pid: int, start: int | None) -> bool:
  """Whether process `pid` on this machine is the one that started at `start`."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # exists, another user's
  now_start = _process_start(pid)
  return start is None or now_start is None or now_start == start


def _when(seconds: float) -> str:
  return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def describe(holder: dict) -> str:
  return (f"{holder.get('purpose', '?')} on host {holder.get('host', '?')} pid "
          f"{holder.get('pid', '?')} since {_when(holder.get('since', 0))}")


class _Store:
  """Create-if-absent, read, overwrite and delete of one small file, local or
  in a bucket."""

  def __init__(self, path: str):
    self.path = path
    self.remote = fileio.is_remote(path)
    if self.remote:
      import fsspec
      self.fs, self.key = fsspec.core.url_to_fs(path)

  def create(self, data: bytes) -> bool:
    """Writes `data` if no file is there; False if one is."""
    if self.remote:
      try:
        self.fs.pipe_file(self.key, data, mode="create")  # gcsfs: ifGenerationMatch=0
      except FileExistsError:
        return False
      return True
    tmp = f"{self.path}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "wb") as f:
      f.write(data)
    try:
      os.link(tmp, self.path)
    except FileExistsError:
      return False
    finally:
      os.unlink(tmp)
    return True

  def read(self) -> dict | None:
    try:
      if self.remote:
        data = self.fs.cat_file(self.key)
      else:
        with open(self.path, "rb") as f:
          data = f.read()
    except FileNotFoundError:
      return None
    try:
      return json.loads(data)
    except ValueError:
      return {"token": None, "host": "?", "unreadable": data[:80].decode("utf-8", "replace")}

  def overwrite(self, data: bytes) -> None:
    if self.remote:
      self.fs.pipe_file(self.key, data)
    else:
      fileio.write_text(self.path, data.decode())

  def delete(self) -> None:
    try:
      self.fs.rm_file(self.key) if self.remote else os.unlink(self.path)
    except FileNotFoundError:
      pass


class Lease:
  """The writer lease on `directory`; `with Lease(d, "train") as lease:`."""

  def __init__(self, directory: str, purpose: str, break_stale: bool = False,
               renew_seconds: float = RENEW_SECONDS, stale_seconds: float | None = None):
    self.directory, self.purpose, self.break_stale = str(directory), purpose, break_stale
    self.path = fileio.join(self.directory, LEASE_NAME)
    self.renew_seconds = renew_seconds
    self.stale_seconds = stale_seconds or renew_seconds * STALE_RENEWALS
    self.store = _Store(self.path)
    self.token = uuid.uuid4().hex
    self.lost = False
    self._since, self._stop, self._thread, self._made_dir = None, threading.Event(), None, False

  def _content(self) -> bytes:
    return json.dumps({
        "host": socket.gethostname(), "boot_id": _boot_id(), "pid": os.getpid(),
        "process_start": _process_start(os.getpid()), "since": self._since,
        "renewed": time.time(), "purpose": self.purpose, "token": self.token}).encode()

  def acquire(self) -> "Lease":
    if not self.store.remote and not os.path.isdir(self.directory):
      os.makedirs(self.directory)
      self._made_dir = True
    self._since = time.time()
    while not self.store.create(self._content()):
      holder = self.store.read()
      if holder is not None:
        self._take_over_or_refuse(holder)
    atexit.register(self.release)
    self._thread = threading.Thread(target=self._renew_loop, daemon=True,
                                    name=f"lease-{self.purpose}")
    self._thread.start()
    return self

  def _take_over_or_refuse(self, holder: dict) -> None:
    """Deletes the holder's lease when it may be broken; else raises LeaseHeld."""
    age = time.time() - float(holder.get("renewed", 0))
    same_machine = holder.get("host") == socket.gethostname() and \
        holder.get("boot_id") == _boot_id()
    if same_machine and isinstance(holder.get("pid"), int) and \
        not _alive(holder["pid"], holder.get("process_start")):
      log.warning("%s: taking over the writer lease of %s, which is no longer running (pid "
                  "%d gone from this machine)", self.directory, describe(holder), holder["pid"])
    elif age > self.stale_seconds and self.break_stale:
      log.warning("%s: breaking the writer lease of %s, not renewed for %.0f s (--break_lease)",
                  self.directory, describe(holder), age)
    else:
      raise LeaseHeld(self._refusal(holder, age))
    if self.store.read() == holder:  # not taken over by someone else meanwhile
      self.store.delete()

  def _refusal(self, holder: dict, age: float) -> str:
    if "unreadable" in holder:
      return (f"{self.path} is not a writer lease this code wrote ({holder['unreadable']!r}); "
              f"if no other writer uses {self.directory}, delete that file")
    head = (f"{self.directory} is in use by another writer: {describe(holder)}, last renewed "
            f"{age:.0f} s ago ({self.path})")
    if age <= self.stale_seconds:
      return (f"{head}. Wait for it to finish, or write elsewhere (another "
              f"{'--workdir' if self.purpose == 'train' else '--out'}); if that writer is gone, "
              f"its lease can be broken with --break_lease once {self.stale_seconds:.0f} s "
              f"pass without renewal")
    return (f"{head}: stale (not renewed for {self.stale_seconds:.0f} s), so its writer is "
            f"probably gone. If you are sure no writer uses {self.directory}, re-run with "
            f"--break_lease")

  def _renew_loop(self) -> None:
    while not self._stop.wait(self.renew_seconds):
      self.renew()

  def renew(self) -> None:
    """Writes a new renewal time, if the lease is still ours."""
    try:
      holder = self.store.read()
      if holder is None or holder.get("token") != self.token:
        self.lost = True
        self._stop.set()
        log.error("%s: this %s lost its writer lease (now %s); another writer may be using "
                  "the directory", self.directory, self.purpose,
                  describe(holder) if holder else "no lease")
        return
      self.store.overwrite(self._content())
    except Exception as e:  # a failed renewal (network) is retried next interval
      log.warning("%s: renewing the writer lease failed (%s); retrying", self.directory, e)

  def release(self) -> None:
    if self._thread is None:
      return
    self._stop.set()
    if self._thread is not threading.current_thread():
      self._thread.join()
    self._thread = None
    atexit.unregister(self.release)
    holder = self.store.read()
    if holder is not None and holder.get("token") == self.token:
      self.store.delete()
    if self._made_dir:
      with contextlib.suppress(OSError):
        os.rmdir(self.directory)  # only if empty: a refused run leaves nothing

  def __enter__(self) -> "Lease":
    return self.acquire() if self._thread is None else self

  def __exit__(self, *exc) -> None:
    self.release()


def take(directory: str, purpose: str, break_stale: bool = False):
  """The lease for a (possibly multi-process) job: process 0 takes it and
  every process learns whether it could (else the others would wait in their
  first collective for a process 0 that has exited). A context manager."""
  import jax
  lease, refusal = contextlib.nullcontext(), ""
  if jax.process_index() == 0:
    try:
      lease = Lease(directory, purpose, break_stale).acquire()
    except LeaseHeld as e:
      refusal = str(e)
  if jax.process_count() > 1:
    import numpy as np
    from jax.experimental import multihost_utils
    refused = int(multihost_utils.broadcast_one_to_all(np.int32(bool(refusal))))
    if refused and not refusal:
      refusal = f"process 0 could not take the writer lease on {directory} (see its log)"
  if refusal:
    raise LeaseHeld(refusal)
  return lease
