"""The launch scripts, installed as package data (alip_jax.launch) so that
`alip-launch DIR` (alip_jax/launch_scripts.py) writes them for an installed
package; in a checkout, run them from here."""
