"""cyclegan: unpaired image-to-image translation with CycleGAN-family models."""

from cyclegan.translate import Translator
from cyclegan.version import __version__

__all__ = ["Translator", "__version__"]
