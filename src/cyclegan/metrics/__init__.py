"""Image-translation metrics: one module per concept, small functions on numpy features / uint8 images.

    inception       FeatureExtractor interface; pytorch-fid's FID Inception (local weights only);
                    RandomFeatureExtractor stand-in for tests
    fid             Frechet distance and feature statistics
    kid             Kernel Inception Distance (unbiased MMD^2, cubic polynomial kernel)
    isc             Inception Score (mean, std over splits)
    gms             GMS = sqrt(FID / IS), lower is better
    reconstruction  cycle L1, PSNR, SSIM (no pretrained network needed)
    fourier         spectra, radial power spectrum, high-frequency ratio (Durall et al., CVPR 2020)
    generate        whole-image generator runs for measurement

The evaluation protocol over a test split lives in ``cyclegan.evaluate``, the ``cyclegan analyze``
workflows (e.g. the Fourier figure) in ``cyclegan.analyze``.
"""

from cyclegan.metrics.fid import feature_statistics, fid_from_features, frechet_distance
from cyclegan.metrics.fourier import (
    high_frequency_ratio,
    log_magnitude_spectrum,
    mean_radial_power_spectrum,
    radial_power_spectrum,
)
from cyclegan.metrics.gms import average_gms, gms
from cyclegan.metrics.inception import (
    FeatureExtractor,
    Features,
    InceptionFeatureExtractor,
    RandomFeatureExtractor,
    default_weights_path,
    find_inception_weights,
)
from cyclegan.metrics.isc import inception_score
from cyclegan.metrics.kid import kernel_inception_distance, mmd2_unbiased, polynomial_kernel
from cyclegan.metrics.reconstruction import cycle_l1, psnr, ssim

__all__ = [
    "FeatureExtractor",
    "Features",
    "InceptionFeatureExtractor",
    "RandomFeatureExtractor",
    "average_gms",
    "cycle_l1",
    "default_weights_path",
    "feature_statistics",
    "fid_from_features",
    "find_inception_weights",
    "frechet_distance",
    "gms",
    "high_frequency_ratio",
    "inception_score",
    "kernel_inception_distance",
    "log_magnitude_spectrum",
    "mean_radial_power_spectrum",
    "mmd2_unbiased",
    "polynomial_kernel",
    "psnr",
    "radial_power_spectrum",
    "ssim",
]
