"""Translate photos, folders and streams at full resolution with any saved or exported generator.

    api      Translator: one generator, PIL images / numpy arrays / uint8 tensors in, the same out;
             padding, batching, whole or tiled passes
    options  TranslateOptions (precision, tiling, budget, batch, resizing, int8) and the option parsers
    backend  choose_backend: which runtime runs the generator (PyTorch, bf16, ONNX Runtime, int8) and why
    tiling   tile layout, raised-cosine blending, shared instance-norm statistics, memory estimate
    files    translate_paths: files, folders, globs, stdin/stdout, output planning and summary
    video    translate_video: frames through a Translator with PyAV (the video extra)
    shard    torchrun: the files split across processes (shard_group, main_first)

The names below are re-exported so ``from cyclegan.translate import Translator`` keeps working.
"""

from cyclegan.image import pad_to_multiple
from cyclegan.translate.api import PreparedImage, Translator
from cyclegan.translate.backend import Backend, choose_backend
from cyclegan.translate.files import OUTPUT_FORMATS, OutputOptions, TranslateSummary, translate_paths
from cyclegan.translate.options import TranslateOptions, parse_bytes, parse_size, parse_tile
from cyclegan.translate.shard import main_first, shard_group
from cyclegan.translate.tiling import MemoryEstimate, blend_weights, estimate_memory, tile_starts
from cyclegan.translate.video import VIDEO_EXTENSIONS, VideoResult, translate_video

__all__ = [
    "OUTPUT_FORMATS",
    "VIDEO_EXTENSIONS",
    "Backend",
    "MemoryEstimate",
    "OutputOptions",
    "PreparedImage",
    "TranslateOptions",
    "TranslateSummary",
    "Translator",
    "VideoResult",
    "blend_weights",
    "choose_backend",
    "estimate_memory",
    "main_first",
    "pad_to_multiple",
    "parse_bytes",
    "parse_size",
    "parse_tile",
    "shard_group",
    "tile_starts",
    "translate_paths",
    "translate_video",
]
