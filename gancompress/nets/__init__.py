"""Plain generator and discriminator modules; no training code lives here."""
