"""The optional libraries of ``cyclegan prep``, each loaded on first use with an error that names its extra.

OpenCV (extra ``prep``) does GrabCut, Canny, dilation and blurs; PySceneDetect and imagehash (extra
``frames``) find shots in films and perceptual hashes of frames. None of them is needed to import
``cyclegan.prep`` or to pack a folder.
"""

from __future__ import annotations

from types import ModuleType

from cyclegan.errors import PrepError


def opencv(what: str) -> ModuleType:
    """``cv2``, or a PrepError saying that ``what`` needs OpenCV."""
    try:
        import cv2  # extra: prep (opencv-python-headless)
    except ImportError:
        raise PrepError(f"{what} needs OpenCV: pip install 'cyclegan[prep]'") from None
    return cv2


def scenedetect(what: str) -> ModuleType:
    """PySceneDetect, or a PrepError saying that ``what`` needs it."""
    try:
        import scenedetect  # extra: frames (scenedetect-headless)
    except ImportError:
        raise PrepError(f"{what} needs PySceneDetect: pip install 'cyclegan[frames]'") from None
    return scenedetect


def imagehash(what: str) -> ModuleType:
    """The imagehash package, or a PrepError saying that ``what`` needs it."""
    try:
        import imagehash  # extra: frames
    except ImportError:
        raise PrepError(f"{what} needs imagehash: pip install 'cyclegan[frames]'") from None
    return imagehash
