"""jaxconv: convolutions for JAX, written in JAX."""

__version__ = "0.1.0"

from . import shapes as shapes

__all__ = ["shapes", "__version__"]
