"""cyclegan: unpaired image-to-image translation with CycleGAN-family models."""

from cyclegan.translate import TranslateOptions, Translator
from cyclegan.version import __version__

__all__ = ["TranslateOptions", "Translator", "__version__"]
