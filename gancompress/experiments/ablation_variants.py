"""The ablation's variants: one student discriminator each, by registry.

Kept apart from :mod:`.ablation` (which runs them) so that ``gancompress ablate --help`` lists them
without importing torch. Imports nothing.
"""
from __future__ import annotations

#: Variant key -> (label, recipe overrides). Order is the table's order.
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "none": ("no discriminator (distillation only)", ("discriminator.mode=none",)),
    "plain": ("plain D", ("discriminator.mode=plain",)),
    "selective-local": ("selective D without the global term",
                        ("discriminator.mode=selective", "discriminator.global_coordination=false")),
    "gcc": ("selective D (full GCC)", ("discriminator.mode=selective", "discriminator.global_coordination=true")),
    "dmd": ("DMD", ("discriminator.mode=dmd", "discriminator.dmd.measure=features",
                    "discriminator.dmd.schedule=retardation")),
    "dmd-output": ("DMD, R_t on D's outputs", ("discriminator.mode=dmd", "discriminator.dmd.measure=output")),
    "dmd-random": ("DMD mask at random (dmd's on-rate)",
                   ("discriminator.mode=dmd", "discriminator.dmd.schedule=random")),
    "selective+dmd": ("selective D + DMD", ("discriminator.mode=selective+dmd",
                                             "discriminator.global_coordination=true")),
    "glead": ("GLeaD", ("discriminator.mode=glead",)),
}

#: Variants whose overrides take a figure measured by another variant of the same seed:
#: variant -> (the variant it reads, the recipe key it sets).
MEASURED: dict[str, tuple[str, str]] = {"dmd-random": ("dmd", "discriminator.dmd.random_on_rate")}

#: The variant the others are compared with when there are several seeds.
REFERENCE = "gcc"
