"""Experiment configs: `get_config(arg)` → ml_collections.ConfigDict.

Installed as the package `alip_jax.configs` (pyproject.toml), so code imports
them as `from alip_jax.configs import demo`, in a checkout and installed alike.
"""
