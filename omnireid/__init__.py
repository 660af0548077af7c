"""omnireid: a PyTorch toolbox for re-identification and general recognition."""
__version__ = "0.1.0"
