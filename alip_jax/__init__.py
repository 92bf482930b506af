"""alip_jax: ALIP language-image pre-training in JAX. `alip_jax.load(path)`
returns a trained or imported model for evaluation (alip_jax/loading.py)."""


def __getattr__(name):
  # Lazy, so `import alip_jax.data...` does not pull in the model stack.
  if name in ("load", "export"):
    from alip_jax import loading
    return getattr(loading, name)
  raise AttributeError(name)
