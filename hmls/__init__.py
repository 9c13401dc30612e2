"""hmls: the HyperMLService controller."""

__version__ = "0.1.0"
