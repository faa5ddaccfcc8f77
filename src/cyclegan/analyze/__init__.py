"""Analyses of trained models, one module per ``cyclegan analyze`` subcommand.

    fourier   spectra of inputs and their translations by one or more checkpoints (seed 001 sec. 5.2):
              the figure and its numbers

They load checkpoints and images and write files; the pure metric functions they use live in
``cyclegan.metrics``.
"""

from cyclegan.analyze.fourier import analyze_fourier, collect_images

__all__ = ["analyze_fourier", "collect_images"]
