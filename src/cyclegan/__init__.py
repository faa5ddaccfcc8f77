"""cyclegan: unpaired image-to-image translation with CycleGAN-family models."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so `import cyclegan` (and the CLI's startup) does not pay for importing torch.
    if name == "Translator":
        from cyclegan.translate import Translator

        return Translator
    raise AttributeError(f"module 'cyclegan' has no attribute {name!r}")
