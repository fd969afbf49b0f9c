"""anogan: anomaly detection in medical images with a GAN trained on healthy tissue only."""

__version__ = "0.1.0"
