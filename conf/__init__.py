"""Hydra's config package: the console scripts find their configs as `retina_seg.conf`, which Hydra
recognises only with this file."""
