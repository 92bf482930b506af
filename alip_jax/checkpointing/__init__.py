from alip_jax.checkpointing.manager import checkpoint_dir, make_manager, restore_latest, save
