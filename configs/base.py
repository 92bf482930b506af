"""Every config field, with its default: the one place defaults live.

Experiment configs (demo.py, alip_yfcc15m.py) start from `get_config()` and
set only what differs. At start-up alip_jax/config_check.py compares a run's
config with this one: an unknown or mistyped field is an error, a missing one
(a short config, the config.json of an older run) gets the default here.

The towers and data geometry default to CLIP ViT-B/16 at 224 px / 77 tokens;
the rest (optimiser, schedule, loss, logging) to what the demo uses.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # "hf:DIR" (HF CLIPModel), "open_clip:DIR", "hf-hub:ORG/NAME", "openai:FILE"
  # (OpenAI / open_clip weights, also TorchScript .pt) or "workdir:W" (a run
  # of ours: its weights and tokenizer).
  c.init_from = ""
  c.init_strict = True  # False: a deliberate partial load (what is skipped is printed)

  c.data = ml_collections.ConfigDict()
  c.data.dir = ""            # "" = <workdir>/data
  c.data.synthetic = False   # True: build the embedded corpus in data.dir if missing
  c.data.synthetic_num_train = 12_000  # training pairs of the embedded corpus
  c.data.image_size = 224
  c.data.context_length = 77
  c.data.train_split = "train"
  c.data.tokenizer = ""      # "" = the data's tokenizer.model (or init_from's tokenizer)
  c.data.eval_split = "test"
  c.data.color_jitter = 0.0  # > 0: brightness/contrast/saturation jitter (UniCLIP views)
  c.data.num_threads = 2     # Grain read threads (per worker process when workers > 0)
  c.data.workers = 0         # > 0: decode + augment in this many processes (same batches)
  c.data.prefetch = 64
  c.data.device_prefetch = 2  # global batches put on the devices ahead of the step (0: none)
  c.data.skip_bad_shards = False  # True: leave out shards that do not open, skip unreadable records
  c.data.max_pixels = 8192 * 8192  # decompression-bomb guard: larger images are skipped

  c.model = ml_collections.ConfigDict()
  # Towers: a name from alip_jax/models/zoo.py ('B/16', text 'B') or the sizes
  # (dict(patch_size, width, depth, heads); text: dict(width, depth, heads)).
  c.model.image = "B/16"
  c.model.text = "B"
  c.model.embed_dim = 512
  c.model.dtype = "float32"  # compute dtype ('bfloat16' on accelerators); params stay float32
  c.model.remat = "none"     # 'none' | 'full' | 'dots' | 'dots_no_batch' (per block)
  c.model.scan = False       # nn.scan over blocks: one compiled body, faster compiles
  c.model.act = "gelu"       # 'quick_gelu' for OpenAI CLIP weights
  c.model.attention = ""     # jax.nn.dot_product_attention implementation: '' (auto) | 'xla' | 'cudnn' (padded: see README)

  c.loss = ml_collections.ConfigDict()
  c.loss.name = "alip"       # alip | clip | siglip | softclip | uniclip | mix
  c.loss.path = "both"       # clip, siglip, softclip, uniclip: raw | caption | both
  c.loss.normalization = "mean_half"
  # Ring (memory-bounded) InfoNCE/SigLIP: 'on' | 'off' | 'auto' (from chunk_above on).
  c.loss.chunked = "auto"
  c.loss.chunk_above = 8192
  c.loss.alip = ml_collections.ConfigDict(dict(
      momentum=0.99, init_mean=1.0, gamma_sample=2.0, gamma_pair=2.0,
      update_before_weights=True, normalization="mean_half",
      sample_gate=True, raw_pair_gate=True, caption_pair_gate=True,
      # 'raw': the sample gate weights the raw-text path only (an ablation;
      # 'both' is the official code).
      sample_gate_paths="both",
      # True: the running means start at the first global batch's means
      # instead of init_mean (an ablation; the official code starts at 1).
      init_from_first_batch=False))
  # SoftCLIP is reconstructed: every unknown is here (docs/METHOD.md, "SoftCLIP").
  c.loss.softclip = ml_collections.ConfigDict(dict(
      target_source="own_modality", target_temperature=0.1, alpha=0.2, beta=1.0,
      keep_hard_clip=False))
  c.loss.mix = ml_collections.ConfigDict(dict(caption_prob=0.5))  # VeCLIP-style mixing

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 1e-3
  c.optim.b1 = 0.9
  c.optim.b2 = 0.98
  c.optim.eps = 1e-8
  c.optim.weight_decay = 0.2
  c.optim.decay_mask = "matrices"  # 'all' = the official code (decays everything)
  c.optim.grad_clip = 1.0
  c.optim.schedule = "warmup_cosine"  # or 'onecycle' (the official recipe)
  c.optim.warmup_steps = 30  # warmup_cosine only

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 128   # global, over all devices and hosts
  c.train.accum_steps = 1    # > 1: GradCache micro-batches (the loss still sees the whole batch)
  c.train.max_consecutive_skips = 10  # non-finite steps in a row before the run stops
  c.train.peak_tflops = 0.0  # per device, for MFU in the progress line; 0 = known accelerators
  c.train.profile_steps = ""  # "A,B": a jax.profiler trace of steps A..B in <workdir>/profile
  c.train.log_down_weighted = 16  # rows of TensorBoard's panel of down-weighted samples; 0 = off
  c.train.steps = 300
  c.train.log_every = 50
  c.train.checkpoint_every = 250
  c.train.keep_checkpoints = 2
  c.train.keep_every = 0     # > 0: also keep every step divisible by this, for good
  c.train.async_checkpoints = True  # save in the background while training goes on
  c.train.restore_fallback = True  # an unreadable newest checkpoint: resume from the one before
  c.train.eval_every = 0     # 0 = only at the end

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 256    # a multiple of data × fsdp (any power of 2 up to 256 devices)
  # Also at every evaluation (and the defaults of `python -m alip_jax.evaluate`):
  # TFDS sets prepared in ArrayRecord format in tfds_data_dir (see docs/RESULTS.md).
  c.eval.zeroshot = ""       # "cifar10:test,cifar100:test": zero-shot top-1/top-5/mean per class
  c.eval.linear_probe = ""   # "cifar10:train:test": logistic regression on frozen features
  c.eval.tfds_data_dir = ""  # '' = TFDS's default (~/tensorflow_datasets)
  c.eval.classnames = ""     # class-name file; '' = the shipped <name>_classes.txt or TFDS's
  c.eval.templates = ""      # prompt templates; '' = the shipped templates.txt
  c.eval.max_items = 0       # > 0: only the first N images of each TFDS split

  # Mesh axis sizes; -1 = all remaining devices, an axis not given is 1. The
  # batch is split over 'data' × 'fsdp'; 'fsdp' also shards parameters and
  # optimiser state; 'model' splits attention heads and MLP (tensor parallel).
  # See README.
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, model=1))
  # Multi-host: see alip_jax/distributed.py (TPU pods and SLURM need nothing here).
  c.distributed = ml_collections.ConfigDict(dict(
      coordinator="", num_processes=0, process_id=-1, platform="", auto=False))
  # Weights & Biases, off unless `project` is set and wandb is installed
  # (the [cloud] extra). mode: '' (online), 'offline' or 'disabled'.
  c.wandb = ml_collections.ConfigDict(dict(project="", entity="", name="", mode="", dir=""))
  return c
