"""lthash: deep hashing for long-tailed image retrieval with personalised diffusion data."""

__version__ = "0.1.0"
