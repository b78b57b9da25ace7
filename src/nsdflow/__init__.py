"""nsdflow: predict visual-cortex fMRI responses to natural images (Algonauts 2023 / NSD)."""

__version__ = "0.1.0"
