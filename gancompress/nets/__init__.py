"""Plain generator and discriminator modules (U-Net, PatchGAN, ResNet, SAGAN, SRResNet, VGG19
features) and the small layer helpers they share; no training code lives here.

May import: errors, config, system, files.
"""
