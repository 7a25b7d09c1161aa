"""fsgan-harness: re-run frequency-domain GANs under a fixed compute budget and report them."""

__version__ = "0.1.0"
