"""The most down-weighted samples of a log interval, for a TensorBoard text panel.

The ALIP gates say which web pairs they distrust; reading those pairs is the
quickest check that the gates down-weight noise and not good data. Every
train step picks, on the device, the `k` samples of the global batch with the
least gate weight — weight = W^s·(W^t + W^c)/2, the sample's share of the
loss relative to an ungated sample — and returns their rows, weights,
similarities and both token rows: k·(2·context_length + 7) numbers,
replicated, whatever the batch size. The host keeps these small arrays of
each step (no sync), stacks and fetches them once per log step, and writes
the `n` lowest of the interval as a markdown table: key, raw text and
caption (decoded from the tokens the model saw, so cut at the context
length), weights and similarities. Keys stay on the host that read them: a
row that another process loaded shows its global row number instead.
"""

from __future__ import annotations

import jax
import numpy as np

WEIGHTS = ("weight_sample", "weight_raw_pair", "weight_caption_pair")
SIMILARITIES = ("s_tc", "s_xt", "s_xc")
PREFIX = "lowest/"


def lowest_weighted(metrics: dict, batch: dict, k: int) -> dict:
  """In the step: the k least-weighted samples as {'lowest/…': array}; {}
  when the loss has no gates (every loss but ALIP) or k = 0."""
  if k <= 0 or not all(name in metrics for name in WEIGHTS + SIMILARITIES):
    return {}
  weight = metrics["weight_sample"] * (metrics["weight_raw_pair"] +
                                       metrics["weight_caption_pair"]) / 2
  k = min(k, weight.shape[0])
  value, row = jax.lax.top_k(-weight, k)
  return {f"{PREFIX}weight": -value, f"{PREFIX}row": row,
          **{f"{PREFIX}{name}": metrics[name][row] for name in WEIGHTS + SIMILARITIES},
          f"{PREFIX}raw_tokens": batch["raw_tokens"][row],
          f"{PREFIX}caption_tokens": batch["caption_tokens"][row]}


def local_rows(sharding, global_rows: int) -> np.ndarray:
  """The global batch rows this process holds, in the order of its local
  batch (as jax.make_array_from_process_local_data lays the local batch out:
  the process's slices, sorted)."""
  spans = sorted({index[0].indices(global_rows)[:2]
                  for device, index in sharding.devices_indices_map((global_rows,)).items()
                  if device.process_index == jax.process_index()})
  return np.concatenate([np.arange(start, stop) for start, stop in spans])


class Panel:
  """Collects each step's lowest-weighted samples; `render()` once per log
  interval gives the markdown of the `n` lowest (or '' when none)."""

  def __init__(self, tokenizer, n: int, batch_sharding=None):
    self.tokenizer, self.n, self.sharding = tokenizer, n, batch_sharding
    self.pending = []  # (step, {'lowest/…': device array}, this process's keys or None)
    self.position = None  # global row → index in this process's batch

  def add(self, step: int, summary: dict, keys=None) -> None:
    """Keeps references only: no copy, no sync."""
    lowest = {k: v for k, v in summary.items() if k.startswith(PREFIX)}
    if lowest and self.n > 0:
      self.pending.append((step, lowest, keys))

  def _key(self, row: int, keys) -> str:
    if keys is None:
      return f"row {row}"
    if self.position is None:
      rows = (local_rows(self.sharding, len(keys) * jax.process_count())
              if self.sharding is not None else np.arange(len(keys)))
      self.position = {int(r): i for i, r in enumerate(rows)}
    i = self.position.get(row)
    return str(keys[i]) if i is not None else f"row {row} (another process)"

  def render(self) -> str:
    if not self.pending:
      return ""
    steps, lowest, keys = zip(*self.pending)
    self.pending = []
    # One batched fetch of the interval's small arrays (stacking them on the
    # device instead would compile a new concatenation per interval length).
    lowest = jax.device_get(list(lowest))
    fetched = {k.removeprefix(PREFIX): np.stack([d[k] for d in lowest]) for k in lowest[0]}
    k = fetched["weight"].shape[1]
    order = np.argsort(fetched["weight"], axis=None, kind="stable")[:self.n]
    lines = ["| weight | W^s | W^t | W^c | S_tc | S_xt | S_xc | step | key | raw text | caption |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for flat in order:
      i, j = divmod(int(flat), k)
      row = int(fetched["row"][i, j])
      key = self._key(row, keys[i])
      cells = [f"{fetched[name][i, j]:.3f}" for name in ("weight",) + WEIGHTS + SIMILARITIES]
      texts = [self.tokenizer.decode(fetched[f"{which}_tokens"][i, j])
               for which in ("raw", "caption")]
      lines.append("| " + " | ".join(cells + [str(steps[i]), _cell(key)] +
                                     [_cell(t) for t in texts]) + " |")
    return "\n".join(lines)


def _cell(text: str) -> str:
  """Text safe inside a markdown table cell."""
  return str(text).replace("|", "\\|").replace("\n", " ")
