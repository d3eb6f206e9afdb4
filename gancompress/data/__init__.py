"""Datasets in the standard public layouts (aligned pairs, unaligned domains, image folders, SR
pairs), image screening, Cityscapes preparation and the deterministic batch source.

May import: errors, config, system, files, nets.
"""
