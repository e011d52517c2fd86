"""Albumentations pipelines built from YAML: the config lists the transforms, Hydra instantiates them (only
albumentations transforms: `config.AugmentationConfig` refuses any other `_target_` when the config is validated)."""

from __future__ import annotations

import warnings

import albumentations as A
from hydra.utils import instantiate

from retina_seg.config import AugmentationConfig, ConfigError


def build_augmentation(cfg: AugmentationConfig, seed: int) -> A.Compose | None:
    """A seeded Compose applying the same geometry to the image and its masks; None when there are no transforms."""
    if not cfg.transforms:
        return None
    transforms = []
    for index, node in enumerate(cfg.transforms):
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                transforms.append(instantiate(node))
        except Exception as exc:  # Hydra wraps the transform's own argument error
            reason = str(exc.__cause__ or exc).splitlines()[0]
            raise ConfigError(
                f"augmentation.transforms[{index}] ({node.get('_target_')}) is invalid: {reason}") from exc
        ignored = [str(w.message) for w in caught if "are not valid for transform" in str(w.message)]
        if ignored:  # albumentations only warns and drops a misspelt argument: a typo must not pass silently
            raise ConfigError(f"augmentation.transforms[{index}] ({node.get('_target_')}) is invalid: {ignored[0]}")
    return A.Compose(transforms, seed=seed)
