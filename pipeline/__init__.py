"""ksent: a Korean review sentiment pipeline (see README.md)."""
__version__ = "0.1.0"
