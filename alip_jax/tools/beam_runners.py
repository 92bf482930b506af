"""Which Apache Beam runner runs a pipeline, and running it: the builder's
(tools/build.py) and the filter's (curation/beam_filter.py).

Without `--runner`: Beam's Python FnApiRunner, named explicitly (Beam's
"DirectRunner" first tries Prism, which downloads a binary at run time), in
multi-processing mode with one worker per core unless the flags say
otherwise. `--runner DaskRunner --dask_client_address HOST:PORT` runs on a
dask.distributed cluster; `--runner DataflowRunner …` on Google Cloud.

What a pipeline must avoid to run on Beam 2.77's DaskRunner (read in its
source, apache_beam/runners/dask, and seen on a LocalCluster; docs/DATA.md):
it computes only the graph's last transform, so a pipeline is one line into
one sink (Flatten what else must finish); a ParDo's tagged outputs all reach
every consumer, main and tagged alike; outputs of finish_bundle are dropped,
so Top.Of/Largest/Smallest (which emit there) give [] — use
CombineGlobally(TopCombineFn(…)).without_defaults(); it has no metrics
(`result.metrics()` raises NotImplementedError); Reshuffle is a no-op and
Create makes partitions of 128 elements unless `--dask_npartitions N`; and it
leaves its Client open (run() closes it).
"""

from __future__ import annotations

import os
import re

DIRECT_RUNNERS = (None, "DirectRunner", "direct", "FnApiRunner")


def pipeline_options(beam_args: list[str]):
  """Beam options from the command line; without --runner, the Python
  DirectRunner in multi-processing mode (one worker per core)."""
  from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
  if any("DaskRunner" in arg for arg in beam_args):
    from apache_beam.runners.dask import dask_runner  # pylint: disable=unused-import  (its --dask_* options)
  options = PipelineOptions(beam_args)
  unknown = set(options.get_all_options(retain_unknown_options=True)) - set(
      options.get_all_options())
  if unknown:  # Beam would drop them with a log line: a typo must not pass silently
    raise ValueError(f"unknown flags {sorted('--' + u for u in unknown)}: neither a "
                     f"flag of this command nor a Beam pipeline option (workers: "
                     f"--direct_num_workers)")
  direct = options.view_as(DirectOptions)
  if options.view_as(StandardOptions).runner in DIRECT_RUNNERS:
    if "--direct_running_mode" not in " ".join(beam_args):
      direct.direct_running_mode = "multi_processing"
    if ("--direct_num_workers" not in " ".join(beam_args)
        and direct.direct_running_mode == "multi_processing"):
      direct.direct_num_workers = os.cpu_count() or 1
    if direct.direct_num_workers < 1:
      raise ValueError(f"--direct_num_workers {direct.direct_num_workers}: must be >= 1")
  return options


def new_pipeline(beam_options):
  import apache_beam as beam
  from apache_beam.options.pipeline_options import StandardOptions
  runner = beam_options.view_as(StandardOptions).runner
  if runner in DIRECT_RUNNERS:
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    runner = FnApiRunner()
  elif runner == "DaskRunner":
    from apache_beam.runners.dask.dask_runner import DaskRunner
    runner = DaskRunner()
  return beam.Pipeline(runner=runner, options=beam_options)


def run(pipeline, plain_errors: tuple[type[Exception], ...] = ()):
  """Runs `pipeline` to the end; returns its result. A worker's error of a
  type in `plain_errors` comes back as that type with its own message
  (runners wrap it in theirs)."""
  try:
    result = pipeline.run()
    try:
      result.wait_until_finish()
    finally:
      client = getattr(result, "client", None)
      if client is not None:  # the DaskRunner's: it would retry a closed cluster for 30 s
        client.close()
  except Exception as e:  # pylint: disable=broad-except
    for error in plain_errors:
      if isinstance(e, error):
        raise
      found = re.search(rf"\b{error.__name__}: (.+)", str(e))
      if found:
        raise error(found.group(1)) from e
    raise
  return result
