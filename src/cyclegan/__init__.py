"""cyclegan: unpaired image-to-image translation with CycleGAN-family models."""

__version__ = "0.1.0"
