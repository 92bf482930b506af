"""The padded, masked attention that lets cuDNN take CLIP's odd lengths.

On CPU the same padding code runs with XLA's attention; it must equal the
unpadded attention in values and gradients (GPU: the cuDNN kernel itself is
checked by launch/gpu_bench.sh)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alip_jax.models import transformer


@pytest.mark.parametrize("length,causal,multiple,padded_length",
                         [(77, True, 8, 80), (17, False, 8, 24), (13, True, 64, 64)])
def test_padded_attention_equals_unpadded_in_values_and_gradients(length, causal, multiple,
                                                                  padded_length, monkeypatch):
  lengths_seen = []  # the sequence length the attention kernel is called with
  kernel = jax.nn.dot_product_attention

  def spy(q, *args, **kwargs):
    lengths_seen.append(q.shape[1])
    return kernel(q, *args, **kwargs)

  monkeypatch.setattr(jax.nn, "dot_product_attention", spy)
  q, k, v = jax.random.normal(jax.random.key(length), (3, 2, length, 3, 8))
  cotangent = jax.random.normal(jax.random.key(1), (2, length, 3, 8))

  def loss(q, k, v, multiple):
    return jnp.sum(transformer.padded_attention(q, k, v, causal, "xla", multiple) * cotangent)

  padded = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)), static_argnums=3)(q, k, v, multiple)
  assert lengths_seen == [padded_length]  # padding happened
  reference = jax.jit(jax.value_and_grad(
      lambda q, k, v: jnp.sum(jax.nn.dot_product_attention(q, k, v, is_causal=causal)
                              * cotangent), argnums=(0, 1, 2)))(q, k, v)
  np.testing.assert_allclose(padded[0], reference[0], rtol=1e-5, atol=1e-5)
  for got, want in zip(padded[1], reference[1]):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_attention_spec_reads_model_attention():
  assert transformer.attention_spec("") == (None, 1)
  assert transformer.attention_spec(None) == (None, 1)
  assert transformer.attention_spec("xla") == ("xla", 1)
  assert transformer.attention_spec("cudnn") == ("cudnn", transformer.CUDNN_PAD_MULTIPLE)
  assert transformer.attention_spec("cudnn:64") == ("cudnn", 64)
  assert transformer.attention_spec("xla:8") == ("xla", 8)
  with pytest.raises(ValueError, match="model.attention"):
    transformer.attention_spec("flash")


@pytest.mark.parametrize("causal", [True, False])
def test_encoder_with_padded_attention_matches_the_unpadded_one(causal):
  """The whole tower (text: causal, image: not) with 'xla:8' padding, in
  bfloat16 as trained: same outputs and parameter gradients."""
  x = jax.random.normal(jax.random.key(0), (2, 13, 32))
  def make(attention):
    return transformer.Encoder(depth=2, num_heads=2, causal=causal, dtype=jnp.bfloat16,
                               attention_impl=attention)
  params = make("").init(jax.random.key(1), x)

  def loss(params, attention):
    return jnp.sum(make(attention).apply(params, x).astype(jnp.float32) ** 2)

  value_and_grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  value, grads = value_and_grad(params, "xla:8")
  want_value, want_grads = value_and_grad(params, "")
  np.testing.assert_allclose(value, want_value, rtol=2e-2)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(got, want, rtol=5e-2, atol=5e-2 * float(jnp.abs(want).max()))


def test_gelu_tanh_is_the_tanh_approximation():
  x = jnp.linspace(-4, 4, 101)
  np.testing.assert_allclose(transformer.activation("gelu_tanh")(x),
                             jax.nn.gelu(x, approximate=True), rtol=1e-6)
  assert float(jnp.abs(transformer.activation("gelu_tanh")(x)
                       - transformer.activation("gelu")(x)).max()) < 1e-2
  with pytest.raises(ValueError, match="gelu_tanh"):
    transformer.activation("relu")
