"""Import generators trained by other projects into normal cyclegan model folders (``cyclegan import``).

Formats (``IMPORT_FORMATS``, each its own module):

    official     the CycleGAN / pix2pix authors' PyTorch generators: zoo files (horse2zebra.pth, ...) and
                 training checkpoints (latest_net_G_A.pth + latest_net_G_B.pth -> two directions)
    cut          CUT / FastCUT generators, with their anti-aliased resampling
    animeganv2   the PyTorch port of AnimeGANv2 (face_paint_512_v2, paprika, celeba_distill)
    animeganv2-tf  the authors' TensorFlow-1 AnimeGANv2 checkpoints (Hayao-64.ckpt, Shinkai-53.ckpt, ...)
    whitebox     White-box Cartoonization's TensorFlow-1 checkpoint (model-33999), guided filter included

``import_weights(fmt, paths, out)`` reads the files with ``torch.load(weights_only=True)``, infers the
architecture from the tensors (never from flags), moves every tensor into our network under a checked
plan, writes the folder atomically and checks it by rebuilding the generators from it.
"""

# Each module registers its format; animeganv2_tf and whitebox read TF-1 checkpoints (importers.tfcheckpoint).
from cyclegan.importers import animeganv2, animeganv2_tf, cut, official, onnx_foreign, whitebox  # noqa: F401
from cyclegan.importers.api import ImportResult, import_weights
from cyclegan.importers.common import IMPORT_FORMATS, Converted, ForeignWeightsError, read_state_dict

__all__ = ["IMPORT_FORMATS", "Converted", "ForeignWeightsError", "ImportResult", "import_weights",
           "read_state_dict"]
