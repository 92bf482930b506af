"""Score a split with ALIP's gates: one Parquet row per record.

  python -m alip_jax.score --model runs/demo/alip --data runs/demo/data \
      --split train --out runs/scores [--report runs/scores/report]

Columns: index (position in the split), key, noise_kind (meta.noise_kind,
'' when absent), s_tc, s_xt, s_xc (the cosines t·c, x·t, x·c), w_sample
(the Language Consistency Gate's W^s), w_raw_pair, w_caption_pair (the
Description Consistency Gate's W^t, W^c) and clip_score (the image–raw-text
cosine x·t of the same model: the CLIP-score filter's number). The weights
come from `alip.gate_weights`, the function the loss uses, at fixed means:
--means H_tc,H_xt,H_xc if given, else the run's running means when --model
is an ALIP training workdir, else the split's own mean cosines.

--model: anything `alip_jax.load` reads. Images are centre-cropped as for
evaluation. Every process of a multi-host job scores its contiguous slice of
the split over the whole device mesh and writes `scores-PPPPP-of-NNNNN.parquet`
(--out must be shared by the processes); bad records are counted by reason in
summary.json, never scored (an unreadable record as `unreadable_record`; a
shard that does not open stops the run, or with --skip_bad_shards is left out
and its records counted as `unreadable_shard`): scored + bad = records.
An interrupted run resumes from its last finished chunk (`--out/chunks/`)
when started again with the same arguments. One scorer writes an --out at a
time (a writer lease), and --out records the model that scored it (source,
step, a hash of the weights) and the means and γ: a re-run with others is
refused unless --overwrite, so one output never mixes two models' rows.
"""

from __future__ import annotations

import json

from absl import app, flags

from alip_jax import console, distributed, mesh as mesh_lib
from alip_jax.configs import base as base_config
from alip_jax.checkpointing import lease
from alip_jax.curation import provenance, scoring
from alip_jax.data import records

_MODEL = flags.DEFINE_string("model", None, "Training workdir, checkpoint, HF CLIP directory or "
                             "OpenAI state dict (anything alip_jax.load reads).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step of a workdir (default: the newest).")
_DATA = flags.DEFINE_string("data", None, "Directory of the built split (ArrayRecord shards).")
_SPLIT = flags.DEFINE_string("split", "train", "Split to score.")
_OUT = flags.DEFINE_string("out", None, "Output directory (Parquet parts, summary.json).")
_MEANS = flags.DEFINE_list("means", None, "H_tc,H_xt,H_xc (default: the run's or the split's).")
_GAMMA_SAMPLE = flags.DEFINE_float("gamma_sample", None, "γ_s (default: the run's, or 2).")
_GAMMA_PAIR = flags.DEFINE_float("gamma_pair", None, "γ_p (default: the run's, or 2).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Global batch (all processes).")
_CHUNK_STEPS = flags.DEFINE_integer("chunk_steps", 8, "Batches per resumable chunk.")
_THREADS = flags.DEFINE_integer("num_threads", 4, "Decode threads per process.")
_REPORT = flags.DEFINE_string("report", None, "Also write plots and an HTML page here.")
_REPORT_N = flags.DEFINE_integer("report_n", 24, "Samples per end of the HTML page.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an --out scored by another model, "
                                "means or γ (else refused).")
_SKIP_BAD_SHARDS = flags.DEFINE_bool("skip_bad_shards", False, "Go on without shards that do "
                                     "not open (truncated); their records count as bad.")
_BREAK_LEASE = flags.DEFINE_bool("break_lease", False, "Break a stale writer lease on --out "
                                 "(only when no other scorer writes there).")
_COORDINATOR = flags.DEFINE_string("coordinator", "", "Multi-process: host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Multi-process: how many.")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "Multi-process: this one's id.")

USER_ERRORS = (lease.LeaseHeld, provenance.OutputMismatch, records.CorruptShardError,
               records.ShardMismatchError)


def _main(argv):
  del argv
  import alip_jax
  console.setup_logging()
  config = base_config.get_config()
  config.distributed.update(coordinator=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                            process_id=_PROCESS_ID.value)
  distributed.initialize(config)
  for name, flag in (("--model", _MODEL), ("--data", _DATA), ("--out", _OUT)):
    if not flag.value:
      raise app.UsageError(f"{name} is required")
  mesh = mesh_lib.make_mesh(dict(data=-1))
  loaded = alip_jax.load(_MODEL.value, step=_STEP.value, mesh=mesh)
  split = records.split_files(_DATA.value, _SPLIT.value)
  summary = console.exit_on_user_errors(lambda: scoring.score_split(
      loaded, split.files, _OUT.value, _BATCH_SIZE.value, _MEANS.value, _GAMMA_SAMPLE.value,
      _GAMMA_PAIR.value, _CHUNK_STEPS.value, _THREADS.value, overwrite=_OVERWRITE.value,
      skip_bad_shards=_SKIP_BAD_SHARDS.value, expected_records=split.num_records,
      break_lease=_BREAK_LEASE.value), USER_ERRORS)
  if summary is not None:
    print(json.dumps(summary, indent=1))
    if _REPORT.value:
      from alip_jax.curation import report
      report.write_report(scoring.read_scores(_OUT.value), split.files, _REPORT.value, _REPORT_N.value,
                          summary)
      print(f"report in {_REPORT.value}/index.html")


def main():  # also the console script `alip-score`
  console.run_absl(_main, __name__)


if __name__ == "__main__":
  main()
