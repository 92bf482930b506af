"""Keep the records a rule selects from a scored split: a new, ordinary split.

  python -m alip_jax.filter --scores runs/scores --data runs/demo/data \
      --split train --out runs/filtered --keep 'w_sample>=0.5'
  python -m alip_jax.filter ... --top_fraction 0.7 --by clip_score

--keep: conditions on the score columns (alip_jax.score.COLUMNS), joined by
commas, all must hold: `w_sample>=0.5`, `clip_score>0.2`,
`noise_kind!=mismatched` (an oracle on the embedded corpus's ground truth).
--top_fraction F --by COLUMN: the round(F·N) scored records with the largest
COLUMN (ties by S_tc, then by position: W^s is 1 for every record at or
above the mean, and S_tc orders those the way the gate would). Both may be
given; the top fraction is then taken from what --keep kept.

It runs as Apache Beam pipelines (alip_jax/curation/beam_filter.py; in
this process unless Beam pipeline options follow `--`, e.g.
`-- --runner DaskRunner --dask_client_address HOST:8786 --dask_npartitions 8`;
docs/DATA.md), so no worker holds the scores table.

The kept records go, in their original order and unchanged, through
`records.write_shard` into `{out}/{split}-0000j-of-0000N.array_record`;
the other splits of --data (e.g. test) and its tokenizer are copied, and
counts.json is written, so `--config.data.dir={out}` trains on it. Records
without a score (bad records) are dropped and counted. filter.json holds
the counts: kept/dropped per rule and per meta.noise_kind.

One filter writes an --out at a time (a writer lease); --out/made_by.json
records the scores (and the model, means and γ that made them), the data and
the rules: a re-run with others is refused unless --overwrite. A refused rule
or input is one `error:` line.
"""

from __future__ import annotations

import json

from absl import app, flags

from alip_jax import console, extras
from alip_jax.checkpointing import lease

extras.require_beam("alip-filter (the filter runs on Apache Beam)")

from alip_jax.curation import beam_filter, filtering  # noqa: E402 -- after the check of [build]
from alip_jax.data import records  # noqa: E402

_SCORES = flags.DEFINE_string("scores", None, "Output directory of alip_jax.score.")
_DATA = flags.DEFINE_string("data", None, "The scored split's data directory.")
_SPLIT = flags.DEFINE_string("split", "train", "Split to filter.")
_OUT = flags.DEFINE_string("out", None, "New data directory.")
_KEEP = flags.DEFINE_string("keep", "", "Conditions, e.g. 'w_sample>=0.5'.")
_TOP_FRACTION = flags.DEFINE_float("top_fraction", None, "Keep this fraction of the records…")
_BY = flags.DEFINE_string("by", "w_sample", "…with the largest value of this column.")
_SHARDS = flags.DEFINE_integer("shards", 4, "Output shards.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an --out made from other scores, "
                               "data or rules (else refused).")
_BREAK_LEASE = flags.DEFINE_bool("break_lease", False, "Break a stale writer lease on --out "
                                 "(only when no other filter writes there).")


def _main(argv):
  beam_args = argv[1:] or ["--direct_running_mode=in_memory"]  # what follows `--`
  for name, flag in (("--scores", _SCORES), ("--data", _DATA), ("--out", _OUT)):
    if not flag.value:
      raise app.UsageError(f"{name} is required")
  if not _KEEP.value and _TOP_FRACTION.value is None:
    raise app.UsageError("give --keep and/or --top_fraction")
  def run():
    filtering.parse_rules(_KEEP.value)  # the rules checked before anything is written
    filtering.check_top(_TOP_FRACTION.value, _BY.value)
    with lease.take(_OUT.value, "filter", _BREAK_LEASE.value):
      filtering.claim_output(_SCORES.value, _DATA.value, _SPLIT.value, _OUT.value, _KEEP.value,
                             _TOP_FRACTION.value, _BY.value, _SHARDS.value, _OVERWRITE.value)
      return beam_filter.filter_split(_SCORES.value, _DATA.value, _SPLIT.value, _OUT.value,
                                      _KEEP.value, _TOP_FRACTION.value, _BY.value, _SHARDS.value,
                                      beam_args)
  stats = console.exit_on_user_errors(
      run, (ValueError, FileNotFoundError, lease.LeaseHeld, records.CorruptShardError))
  print(json.dumps(stats, indent=1))


def main():  # also the console script `alip-filter`
  console.run_absl(_main, __name__)


if __name__ == "__main__":
  main()
