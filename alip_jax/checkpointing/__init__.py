from alip_jax.checkpointing.manager import make_manager, restore_latest, save
