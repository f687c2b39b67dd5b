"""Encoder pretraining (``scr pretrain-encoder``): one shared encoder, one head per scene.

As in ACE's pretraining, an encoder is trained jointly with one small scene-specific head per
training scene, so that it learns features from which *any* scene's coordinates are easy to
regress by a freshly trained head. The scenes are synthetic rooms with strong domain
randomization (:func:`scene_config`, :func:`photometric`); no evaluation data is ever used.

Targets come from the rendered depth: each head is trained with the Euclidean distance between
its prediction and the true scene coordinate (metres). That converges in far fewer steps than
ACE's RGB-only reprojection loss, which has to discover depth by triangulation, and the depth
is exact for rendered scenes.

The pipeline, deterministic by seed:

1. ``build_pool``: render ``frames_per_scene`` views of each randomized scene, augment each view
   ``crops_per_frame`` times (scale, rotation, exposure, gamma, blur, noise, JPEG), compute the
   weight-free SIFT stem once on the whole image and keep a square window of its features with
   the scene coordinate of every cell. The stem is frozen, so the pool is computed once.
2. ``Pretrainer.run``: each step takes ``windows_per_scene`` pool windows from each of
   ``batch_scenes`` different scenes (the encoder learns from these), plus ``head_samples``
   random cells of each of those scenes with cached context features (they keep the heads'
   updates decorrelated; the cache is refreshed every ``refresh_every`` steps) (chosen by
   ``numpy.random.default_rng([seed, step])``, so a resumed run draws the same batches), runs
   the learned context layers and each window's head, and steps AdamW with a warm-up + cosine
   learning rate that is a function of the step.
3. Checkpoints (safetensors, no pickles) hold the encoder, heads, optimizer moments, the loss
   history and the wall time so far; ``--resume`` continues bit-for-bit.
"""

from .card import COMPARISON_BEGIN, COMPARISON_END, command_line, replace_comparison, sha256_file, write_model_card
from .config import SCENE_SEED_BASE, PretrainConfig
from .inits import INITS, SiftContextInit, XFeatInit
from .pool import Pool, build_pool
from .scenes import RANDOMIZATION, photometric, random_light, scene_config
from .trainer import CHECKPOINT_FORMAT, Pretrainer, learning_rate

__all__ = [
    "CHECKPOINT_FORMAT",
    "COMPARISON_BEGIN",
    "COMPARISON_END",
    "INITS",
    "RANDOMIZATION",
    "SCENE_SEED_BASE",
    "Pool",
    "PretrainConfig",
    "Pretrainer",
    "SiftContextInit",
    "XFeatInit",
    "build_pool",
    "command_line",
    "learning_rate",
    "photometric",
    "random_light",
    "replace_comparison",
    "scene_config",
    "sha256_file",
    "write_model_card",
]
