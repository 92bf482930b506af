"""benchmarks.profile_step: a real CPU trace of the train step summarised, and the
grouping of GPU kernel names (matmul / attention / elementwise / other)."""

import gzip
import json

import jax
import pytest

from alip_jax.benchmarks import profile_step as profile, train_step
from conftest import tiny_config


@pytest.mark.parametrize("name,group", [
    ("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_TNT", "matmul"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", "matmul"),
    ("cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_64x4_tn_align8", "matmul"),
    ("gemm_fusion_dot_12", "matmul"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x64x64", "attention"),
    ("loop_multiply_fusion_3", "elementwise"), ("input_reduce_fusion_12", "elementwise"),
    ("transpose_copy_fusion.43", "elementwise"), ("convert_bitcast_fusion", "elementwise"),
    ("ncclDevKernel_AllReduce_Sum_f32_RING_LL", "other")])
def test_kernel_names_group_on_gpu_and_cpu(name, group):
  assert profile.kernel_group(name) == group


def test_gpu_trace_counts_stream_kernels_only(tmp_path):
  """GPU traces also carry 'XLA Ops' / 'Steps' lines over the same time:
  only the stream's kernels count."""
  meta = [{"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0"}},
          {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/host:CPU"}},
          {"ph": "M", "name": "thread_name", "pid": 1, "tid": 7, "args": {"name": "Stream #20"}},
          {"ph": "M", "name": "thread_name", "pid": 1, "tid": 8, "args": {"name": "XLA Ops"}},
          {"ph": "M", "name": "thread_name", "pid": 2, "tid": 9, "args": {"name": "python"}}]
  events = [{"ph": "X", "pid": 1, "tid": 7, "name": "nvjet_tst_128x256", "dur": 600.0,
             "args": {"hlo_op": "custom-call.3"}},
            {"ph": "X", "pid": 1, "tid": 7, "name": "cudnn_generated_fort_native_sdpa_flash",
             "dur": 200.0},
            {"ph": "X", "pid": 1, "tid": 7, "name": "loop_add_fusion", "dur": 100.0},
            {"ph": "X", "pid": 1, "tid": 7, "name": "loop_add_fusion", "dur": 100.0},
            {"ph": "X", "pid": 1, "tid": 8, "name": "dot.3", "dur": 5000.0},
            {"ph": "X", "pid": 2, "tid": 9, "name": "PjitFunction(train_step)", "dur": 9000.0}]
  path = tmp_path / "host.trace.json.gz"
  with gzip.open(path, "wt") as f:
    json.dump({"traceEvents": meta + events}, f)
  assert profile.find_trace(str(tmp_path)) == str(path)
  summary = profile.summarise(str(path), top=2)
  assert summary["kernel_ms"] == pytest.approx(1.0)
  assert {g: v["ms"] for g, v in summary["groups"].items()} == pytest.approx(
      {"matmul": 0.6, "attention": 0.2, "elementwise": 0.2, "other": 0.0})
  assert [(k["name"], k["count"]) for k in summary["top"]] == [
      ("nvjet_tst_128x256", 1), ("cudnn_generated_fort_native_sdpa_flash", 1)]
  assert "| matmul | 0.6 | 60.0 % |" in profile.table(summary)


def test_hlo_names_the_groups_of_fusions():
  hlo = """HloModule jit_train_step

%ynn_fused_computation.1 (p0: f32[8,96], p1: f32[96,96]) -> f32[8,96] {
  %p0 = f32[8,96] parameter(0)
  %p1 = f32[96,96] parameter(1)
  ROOT %dot.1 = f32[8,96] dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%fused_add (p0: f32[8,96]) -> f32[8,96] {
  %p0 = f32[8,96] parameter(0)
  ROOT %add.1 = f32[8,96] add(%p0, %p0)
}

ENTRY %main (a: f32[8,96], b: f32[96,96]) -> f32[8,96] {
  %a = f32[8,96] parameter(0)
  %b = f32[96,96] parameter(1)
  %ynn_fusion.7 = f32[8,96] fusion(%a, %b), kind=kCustom, calls=%ynn_fused_computation.1
  %fmha = (bf16[2,80,8,64]) custom-call(%a), custom_call_target="__cudnn$fmhaSoftmax"
  ROOT %ynn_fusion.8 = f32[8,96] fusion(%ynn_fusion.7), kind=kLoop, calls=%fused_add
}
"""
  assert profile.hlo_groups(hlo) == {"ynn_fusion.7": "matmul", "ynn_fusion.8": "elementwise",
                                     "fmha": "attention", "dot.1": "matmul"}


@pytest.mark.slow
def test_profile_of_a_cpu_train_step(tmp_path):
  config = tiny_config()
  config.mesh = dict(data=1)
  config.train.batch_size = 8
  with jax.default_device(jax.devices()[0]):
    train_step.run(config, steps=2, vocab=64, peak_tflops=0.0, devices=jax.devices()[:1],
                   trace_dir=str(tmp_path))
  hlo = open(tmp_path / train_step.HLO_FILE).read()
  summary = profile.summarise(profile.find_trace(str(tmp_path)), top=10, hlo_text=hlo)
  groups = summary["groups"]
  assert summary["kernel_ms"] > 0 and len(summary["top"]) == 10
  assert sum(g["fraction"] for g in groups.values()) == pytest.approx(1.0)
  # The step's matmuls and its elementwise work are both seen on a CPU too.
  assert groups["matmul"]["fraction"] > 0.05 and groups["elementwise"]["fraction"] > 0.05
