"""Generator and discriminator families, one family per file."""
