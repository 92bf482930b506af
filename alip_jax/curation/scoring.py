"""Scoring a split with ALIP's gates (the library under `python -m alip_jax.score`).

See alip_jax/score.py for the columns and where the means come from.
"""

from __future__ import annotations

import collections
import concurrent.futures
import glob
import logging
import os
import time

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from alip_jax import extras, fileio, mesh as mesh_lib
from alip_jax.data import pipeline, records
from alip_jax.losses import alip

log = logging.getLogger(__name__)

SIMILARITIES = ("s_tc", "s_xt", "s_xc")  # in alip.GATE_NAMES order
WEIGHTS = {"sample": "w_sample", "raw_pair": "w_raw_pair", "caption_pair": "w_caption_pair"}
COLUMNS = ("index", "key", "noise_kind", *SIMILARITIES, *WEIGHTS.values(), "clip_score")


def similarity_fn(loaded):
  """Jitted (params, images, raw tokens, caption tokens) → [N, 3] cosines
  (S_tc, S_xt, S_xc), batch-sharded: the model call and `alip.similarities`
  exactly as the train step makes them."""
  model, batch = loaded.model, mesh_lib.batch_sharding(loaded.mesh)

  def fn(params, images, raw, caption):
    embeddings, _ = model.apply({"params": params}, images, {"raw": raw, "caption": caption})
    sims = alip.similarities(embeddings["image"], embeddings["raw"], embeddings["caption"])
    return jnp.stack([sims[k] for k in alip.GATE_NAMES], -1)

  return jax.jit(fn, in_shardings=(loaded.param_sharding, batch, batch, batch),
                 out_shardings=batch)


def weights_at(sims: np.ndarray, means: dict, gamma_sample: float, gamma_pair: float) -> dict:
  """[N, 3] cosines → {w_sample, w_raw_pair, w_caption_pair} at fixed means."""
  by_name = {k: jnp.asarray(sims[:, i]) for i, k in enumerate(alip.GATE_NAMES)}
  weights = alip.gate_weights(by_name, {k: jnp.float32(means[k]) for k in alip.GATE_NAMES},
                              gamma_sample, gamma_pair)
  return {column: np.asarray(weights[name]) for name, column in WEIGHTS.items()}


def prepare(data: bytes, tokenizer, image_size: int) -> dict:
  """One record → {key, image, raw, caption, noise_kind}, or an error dict."""
  rec = pipeline.decode_record(data, min_side=image_size)
  if "error" in rec:
    return rec
  return {"key": rec["key"], "image": pipeline.eval_image(rec["image"], image_size),
          "raw": tokenizer.encode(rec["raw_text"]), "caption": tokenizer.encode(rec["caption"]),
          "noise_kind": str(rec["meta"].get("noise_kind", "") or "")}


class Plan:
  """Who scores what: process p takes records [p·per, (p+1)·per) of the
  split, `local_batch` at a time; every process runs the same number of
  steps (short slices are padded), grouped into chunks of `chunk_steps`."""

  def __init__(self, num_records: int, batch_size: int, mesh, chunk_steps: int,
               process_index: int, process_count: int):
    self.local_batch = mesh_lib.check_batch_size(batch_size, mesh, process_count)
    self.per_process = -(-num_records // process_count)
    self.start = min(num_records, process_index * self.per_process)
    self.stop = min(num_records, self.start + self.per_process)
    self.steps = -(-self.per_process // self.local_batch)
    self.chunk_steps = chunk_steps
    self.num_chunks = -(-self.steps // chunk_steps)

  def chunk_indices(self, chunk: int) -> np.ndarray:
    first = self.start + chunk * self.chunk_steps * self.local_batch
    last = min(self.stop, first + self.chunk_steps * self.local_batch)
    return np.arange(first, max(first, last))

  def chunk_steps_of(self, chunk: int) -> int:
    return min(self.chunk_steps, self.steps - chunk * self.chunk_steps)


def _tag(process_index, process_count):
  return f"{process_index:05d}-of-{process_count:05d}"


def _save_npz(path, **arrays):
  tmp = path + ".incomplete.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def score_chunk(plan, chunk, source, loaded, fn, pool):
  """Scores one chunk; returns the arrays saved for it."""
  indices = plan.chunk_indices(chunk)
  prepared = list(pool.map(lambda i: prepare(source[int(i)], loaded.tokenizer, loaded.image_size),
                           indices))
  good = [(i, r) for i, r in zip(indices, prepared) if "error" not in r]
  bad = [(i, r) for i, r in zip(indices, prepared) if "error" in r]
  for i, r in bad[:3]:
    log.warning("record %d (%s): %s %s", i, r["key"], r["error"], r.get("detail", ""))
  size, length = loaded.image_size, loaded.tokenizer.context_length
  sims = []
  sharding = mesh_lib.batch_sharding(loaded.mesh)
  for step in range(plan.chunk_steps_of(chunk)):  # the same count on every process
    part = [r for _, r in good[step * plan.local_batch:(step + 1) * plan.local_batch]]
    pad = plan.local_batch - len(part)
    images = np.zeros((plan.local_batch, size, size, 3), np.uint8)
    raw = np.zeros((plan.local_batch, length), np.int32)
    caption = np.zeros((plan.local_batch, length), np.int32)
    for j, r in enumerate(part):
      images[j], raw[j], caption[j] = r["image"], r["raw"], r["caption"]
    arrays = [jax.make_array_from_process_local_data(sharding, a) for a in (images, raw, caption)]
    out = fn(loaded.params, *arrays)
    local = np.asarray(multihost_utils.global_array_to_host_local_array(
        out, loaded.mesh, sharding.spec))
    sims.append(local[:plan.local_batch - pad])
  sims = np.concatenate(sims) if sims else np.zeros((0, 3), np.float32)
  if len(sims) != len(good):  # more good records than steps can hold: cannot happen
    raise AssertionError(f"chunk {chunk}: {len(good)} records, {len(sims)} scores")
  return dict(index=np.asarray([i for i, _ in good], np.int64),
              key=np.asarray([r["key"] for _, r in good], dtype=object).astype(str),
              noise_kind=np.asarray([r["noise_kind"] for _, r in good], dtype=object).astype(str),
              sims=sims.astype(np.float32),
              bad_index=np.asarray([i for i, _ in bad], np.int64),
              bad_key=np.asarray([r["key"] for _, r in bad], dtype=object).astype(str),
              bad_reason=np.asarray([r["error"] for _, r in bad], dtype=object).astype(str))


def _gather_int(value: int) -> list[int]:
  if jax.process_count() == 1:
    return [value]
  return [int(v) for v in multihost_utils.process_allgather(np.int64(value))]


def _gather_floats(values: np.ndarray) -> np.ndarray:
  if jax.process_count() == 1:
    return values[None]
  return np.asarray(multihost_utils.process_allgather(values))


def resolve_means(loaded, means_flag, sims) -> tuple[dict, str]:
  """--means, else an ALIP run's running means, else the split's own means."""
  if means_flag:
    values = [float(v) for v in means_flag]
    if len(values) != 3:
      raise ValueError(f"--means needs three numbers H_tc,H_xt,H_xc, got {means_flag}")
    return dict(zip(alip.GATE_NAMES, values)), "--means"
  if loaded.gate_state is not None and loaded.loss_config is not None and \
      loaded.loss_config.name == "alip":
    return dict(loaded.gate_state), f"the run's running means at step {loaded.step}"
  totals = _gather_floats(np.concatenate([sims.sum(0), [len(sims)]]).astype(np.float64)).sum(0)
  if totals[3] == 0:
    raise ValueError("no record could be scored, so the split has no mean; pass --means")
  return dict(zip(alip.GATE_NAMES, (totals[:3] / totals[3]).tolist())), "the split's own means"


def score_split(loaded, files: list[str], out: str, batch_size: int = 256, means=None,
                gamma_sample: float | None = None, gamma_pair: float | None = None,
                chunk_steps: int = 8, num_threads: int = 4, progress: bool = True,
                stop_after_chunks: int | None = None) -> dict | None:
  """Scores `files` into `out`; returns the summary (None when stopped early
  by `stop_after_chunks`, a test hook that imitates an interruption)."""
  pi, pc = jax.process_index(), jax.process_count()
  source = records.ShardedSource(files)
  plan = Plan(len(source), batch_size, loaded.mesh, chunk_steps, pi, pc)
  alip_cfg = loaded.loss_config.alip if loaded.loss_config is not None else None
  gamma_sample = gamma_sample or (alip_cfg.gamma_sample if alip_cfg else 2.0)
  gamma_pair = gamma_pair or (alip_cfg.gamma_pair if alip_cfg else 2.0)
  chunk_dir = os.path.join(out, "chunks", _tag(pi, pc))
  os.makedirs(chunk_dir, exist_ok=True)
  manifest = {"files": [os.path.basename(f) for f in files], "num_records": len(source),
              "batch_size": batch_size, "chunk_steps": chunk_steps, "process_count": pc}
  manifest_path = os.path.join(out, "chunks", "manifest.json")
  if pi == 0:
    old = fileio.read_json(manifest_path, None)
    if old is not None and old != manifest:
      raise ValueError(f"{out} holds chunks of another scoring run ({old}); use a new --out "
                       f"or delete {out}/chunks to start over")
    fileio.write_json(manifest_path, manifest)

  done = 0
  while os.path.exists(os.path.join(chunk_dir, f"chunk-{done:05d}.npz")):
    done += 1
  first = min(_gather_int(done))  # resume where every process has its chunks
  fn = similarity_fn(loaded)
  start = time.time()
  bar, scored_now = None, 0
  if progress and pi == 0:
    from tqdm import tqdm
    bar = tqdm(total=len(source), initial=min(len(source), first * chunk_steps * batch_size),
               unit="rec", desc="scoring", dynamic_ncols=True)
  with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
    for chunk in range(first, plan.num_chunks):
      if stop_after_chunks is not None and chunk >= first + stop_after_chunks:
        return None
      arrays = score_chunk(plan, chunk, source, loaded, fn, pool)
      _save_npz(os.path.join(chunk_dir, f"chunk-{chunk:05d}.npz"), **arrays)
      scored_now += len(arrays["index"])
      if bar is not None:
        bar.update(min(chunk_steps * batch_size, len(source) - bar.n))
  if bar is not None:
    bar.close()
  seconds = time.time() - start

  parts = [np.load(os.path.join(chunk_dir, f"chunk-{c:05d}.npz")) for c in range(plan.num_chunks)]
  cat = lambda name: np.concatenate([p[name] for p in parts]) if parts else np.zeros(0)
  sims = cat("sims").reshape(-1, 3)
  means_used, means_source = resolve_means(loaded, means, sims)
  table = {"index": cat("index").astype(np.int64), "key": cat("key").astype(str),
           "noise_kind": cat("noise_kind").astype(str),
           **{name: sims[:, i] for i, name in enumerate(SIMILARITIES)},
           **weights_at(sims, means_used, gamma_sample, gamma_pair), "clip_score": sims[:, 1]}
  write_parquet(table, os.path.join(out, f"scores-{_tag(pi, pc)}.parquet"))
  bad = collections.Counter(cat("bad_reason").astype(str).tolist())
  local = {"records": int(plan.stop - plan.start), "scored": int(len(sims)),
           "bad": dict(bad), "seconds": seconds, "scored_now": scored_now}
  if local["scored"] + sum(bad.values()) != local["records"]:
    raise AssertionError(f"process {pi}: {local} does not add up")
  fileio.write_json(os.path.join(out, f"summary-{_tag(pi, pc)}.json"), local)
  if pc > 1:
    multihost_utils.sync_global_devices("alip_jax:scores_written")
  summary = None
  if pi == 0:
    summary = merge_summaries(out, pc, len(source))
    summary.update(means=means_used, means_source=means_source, gamma_sample=gamma_sample,
                   gamma_pair=gamma_pair, batch_size=batch_size, step=loaded.step,
                   mesh=dict(loaded.mesh.shape))
    fileio.write_json(os.path.join(out, "summary.json"), summary)
  return summary


def merge_summaries(out: str, process_count: int, num_records: int) -> dict:
  parts = [fileio.read_json(os.path.join(out, f"summary-{_tag(p, process_count)}.json"))
           for p in range(process_count)]
  bad = collections.Counter()
  for part in parts:
    bad.update(part["bad"])
  scored = sum(p["scored"] for p in parts)
  seconds = max(p["seconds"] for p in parts)
  summary = {"records": num_records, "scored": scored, "bad": dict(bad),
             "processes": process_count, "seconds": round(seconds, 2),
             "records_per_s": round(sum(p["scored_now"] for p in parts) / seconds, 1)
             if seconds > 0 else None}
  if scored + sum(bad.values()) != num_records:
    raise AssertionError(f"scored {scored} + bad {dict(bad)} != {num_records} records")
  return summary


def write_parquet(table: dict, path: str) -> None:
  pa = extras.require("pyarrow", "Writing Parquet scores")
  import pyarrow.parquet as pq
  tmp = path + ".incomplete"
  pq.write_table(pa.table({c: table[c] for c in COLUMNS}), tmp)
  os.replace(tmp, path)


def read_scores(out: str) -> dict:
  """All parts of a scores directory as one table {column: numpy array},
  sorted by record index."""
  pq = extras.require("pyarrow.parquet", "Reading Parquet scores")
  paths = sorted(glob.glob(os.path.join(out, "scores-*-of-*.parquet")))
  if not paths:
    raise FileNotFoundError(f"no scores-*.parquet in {out}: run python -m alip_jax.score first")
  tables = [pq.read_table(p) for p in paths]
  table = {c: np.concatenate([t.column(c).to_numpy(zero_copy_only=False) for t in tables])
           for c in COLUMNS}
  order = np.argsort(table["index"], kind="stable")
  return {c: v[order] for c, v in table.items()}
