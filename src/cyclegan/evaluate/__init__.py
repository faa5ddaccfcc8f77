"""Evaluate translation quality on a test split, both directions: FID, KID, IS, GMS, cycle L1/PSNR/SSIM.

Protocol (comparable with published CycleGAN / CUT tables when the Inception weights are present):

- test images (``testA``/``testB`` of a dataroot, or two folders) are resized to the checkpoint's
  ``data.crop_size`` square with bicubic resampling, as the CycleGAN test script does; 256 x 256 for
  the paper's models, where horse2zebra is a no-op;
- a2b translates every test-A image with G_A and compares the outputs with the real test-B images
  (and b2a the reverse); outputs are quantised to uint8 first, exactly as if saved as PNG;
- FID / KID / IS use ``metrics.inception`` (pytorch-fid's Inception and preprocessing); IS and GMS
  are of the translated images; cycle L1 / PSNR / SSIM compare x with G_B(G_A(x)) (and the reverse).

Without the Inception weights the reconstruction scores are still computed and written; the result
records the reason in ``inception_error`` and the CLI exits non-zero.

``--classifier`` adds a domain-classification score that needs no downloaded weights (``classifier``:
a small CNN trained on the two training domains, cached per data set; comparable only within one data
set and classifier).

Modules: ``scores`` (the computation), ``classifier`` (the domain classifier's workflow),
``checkpoints`` (``cyclegan evaluate`` on a saved model), ``during_training`` (``--eval-every``),
``reference`` (``--reference``: PSNR/SSIM of a model against another one, e.g. a distilled student
against its teacher).
"""

from cyclegan.evaluate.checkpoints import evaluate_checkpoint
from cyclegan.evaluate.classifier import DomainScorer, build_domain_scorer, load_or_train_classifier
from cyclegan.evaluate.during_training import (
    TrainingEvaluator,
    best_from_metrics_log,
    evaluate_run_during_training,
    flatten_result,
    is_improvement,
)
from cyclegan.evaluate.reference import evaluate_reference, reference_scores
from cyclegan.evaluate.scores import DIRECTIONS, evaluate_generators, extract_features, load_test_images

__all__ = [
    "DIRECTIONS",
    "DomainScorer",
    "TrainingEvaluator",
    "best_from_metrics_log",
    "build_domain_scorer",
    "evaluate_checkpoint",
    "evaluate_generators",
    "evaluate_reference",
    "evaluate_run_during_training",
    "extract_features",
    "flatten_result",
    "is_improvement",
    "load_or_train_classifier",
    "load_test_images",
    "reference_scores",
]
