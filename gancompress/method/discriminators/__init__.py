"""Wrappers that change how a discriminator behaves (selective activation, ...)."""
