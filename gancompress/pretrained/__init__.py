"""Generators and discriminators trained elsewhere, mapped onto gancompress's nets.

"I have a model, make it small": most trained image-to-image generators come from
junyanz/pytorch-CycleGAN-and-pix2pix (``latest_net_G.pth``, ``latest_net_G_A.pth``,
``latest_net_G_B.pth``; GAN Compression's and OMGD's released full models share the layouts),
or from gancompress itself. This package reads such a file without running code
(``torch.load(weights_only=True)``), recognises its layout, infers the architecture settings its
keys and shapes determine, maps its keys onto our nets and checks every key and shape.

Modules: :mod:`.files` reads a weights file and checks its keys and shapes against a net;
:mod:`.layouts` describes the layouts of other codebases' files and maps their keys onto ours;
:mod:`.generator_files` and :mod:`.discriminator_files` recognise a file and infer the settings it
implies; :mod:`.loading` loads a file into a family's net and checks every file a recipe names.

May import: errors, config, system, files, nets, data, metrics, demo, method, families.
"""
from __future__ import annotations
