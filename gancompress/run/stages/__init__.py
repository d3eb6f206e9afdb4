"""The per-iteration work of the training stages, for every family.

A stage holds its modules, optimisers and controllers and exposes ``name``, ``epochs``,
``plan(iterations, per_epoch)`` (told its length before the first step), ``step(batch, batch2)``,
``set_epoch``, ``state_dict``/``load_state_dict``, ``visuals`` and
``log_extras``; the one loop in :mod:`gancompress.run.train` drives them. Losses are returned as
detached device tensors: nothing here waits on the GPU.

- :mod:`.gan`: the ordinary GAN iteration (:class:`GANUpdate`), the optional generator-only
  pre-training, stage 1 (the sparse model) and plain GAN training of given nets (the baselines);
- :mod:`.distill`: stage 3, GCC's online distillation against the student discriminator.
"""
from .distill import DistillStage, student_discriminator
from .gan import (
    GANStage,
    GANUpdate,
    PretrainStage,
    SparseStage,
    build_generators,
    build_pair,
    generator_visuals,
)

__all__ = ["DistillStage", "GANStage", "GANUpdate", "PretrainStage", "SparseStage", "build_generators", "build_pair",
           "generator_visuals", "student_discriminator"]
