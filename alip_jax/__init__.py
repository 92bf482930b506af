"""alip_jax: ALIP language-image pre-training in JAX. `alip_jax.load(path)`
returns a trained or imported model for evaluation (alip_jax/loading.py);
`alip_jax.export(model, dir, format='hf'|'open_clip')` writes it for
transformers or open_clip (alip_jax/exporting.py)."""


def __getattr__(name):
  # Lazy, so `import alip_jax.data...` does not pull in the model stack.
  if name == "load":
    from alip_jax import loading
    return loading.load
  if name == "export":
    from alip_jax import exporting
    return exporting.export
  raise AttributeError(name)
