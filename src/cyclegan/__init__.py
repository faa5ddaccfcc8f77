"""cyclegan: unpaired image-to-image translation with CycleGAN-family models."""

__version__ = "0.1.0"

# After __version__: modules imported from here read it while this package is still initialising.
from cyclegan.translate import Translator

__all__ = ["Translator", "__version__"]
