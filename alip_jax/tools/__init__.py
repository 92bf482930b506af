"""Offline data tools, run before training (never by the trainer's input path):

  build         `python -m alip_jax.tools.build`: ArrayRecord shards from tars and tables
  beam_build    the builder's Apache Beam graph
  beam_runners  which Beam runner runs a pipeline (in-process, Dask, Dataflow) and running it
  beam_counts   counting skips as data (runners without Beam metrics)
  record_files  ArrayRecord files on any Beam file system
  inputs        the builder's readers of tars, tables and caption files
  manifest      the builder's file listing, output checks and run identity
  tar_reader    a streaming tar reader that names the member it fails on
  caption       `python -m alip_jax.tools.caption`: the captioner stage (HF model)
  beam_caption  the captioner stage as a Beam pipeline with RunInference
  synthetic     the embedded "noisy web" corpus; `prepare()` builds it for a run
  tfds_synthetic  the corpus's held-out images as a TFDS classification set

tools/ imports alip_jax.data (records, web rules, tokenizer); alip_jax.data
never imports tools/.
"""
