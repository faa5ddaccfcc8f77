"""Dataset preparation, one module per ``cyclegan prep`` command.

- ``pack``: a folder of images as one uint8 .npz array (``np.savez_compressed``, as Keras CycleGAN
  tutorials pack a domain).
- ``background``: subjects on white by GrabCut (Rother, Kolmogorov & Blake, SIGGRAPH 2004).
- ``frames``: a style training folder from films or episodes (streaming, shots, the folder), with
  ``shots`` picking each shot's frames (stable middles, filters, dedupe, bar crops).
- ``edges``: edge-smoothed copies of style images for CartoonGAN's edge-promoting loss.
"""

from cyclegan.prep.background import BackgroundResult, composite_on_white, grabcut_mask, remove_background
from cyclegan.prep.pack import FITS, PackResult, fit_square, pack_folder

__all__ = [
    "FITS",
    "BackgroundResult",
    "PackResult",
    "composite_on_white",
    "fit_square",
    "grabcut_mask",
    "pack_folder",
    "remove_background",
]
