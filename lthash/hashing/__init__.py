"""Deep hashing: methods, backbones, training and encoding."""
