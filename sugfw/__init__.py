"""SUGFW: SAM-based uncertainty-guided feature weighting for cold-start active learning."""

__version__ = "0.1.0"
