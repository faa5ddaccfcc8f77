"""Analyses of trained models, one module per ``cyclegan analyze`` subcommand.

    fourier   spectra of inputs and their translations by one or more checkpoints (Durall et al., CVPR 2020):
              the figure and its numbers
    video     warping error of a translated video against its input (Lai et al., ECCV 2018), with
              the input's own error as the floor

They load checkpoints and images and write files; the pure metric functions they use live in
``cyclegan.metrics``.
"""

from cyclegan.analyze.fourier import analyze_fourier, collect_images
from cyclegan.analyze.video import analyze_video, format_video_table, read_video_frames

__all__ = ["analyze_fourier", "analyze_video", "collect_images", "format_video_table", "read_video_frames"]
