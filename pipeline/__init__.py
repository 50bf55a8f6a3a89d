"""ksent: a Korean review sentiment pipeline (see README.md).

The public API is short: `pipeline.load(...)` returns a `pipeline.Classifier` (the default model,
or a bundle folder). Importing `pipeline` stays light: the classifier's module is imported on first use.
"""
__version__ = "0.1.0"
__all__ = ["Classifier", "load"]


def load(model_dir=None, **kwargs):
    """Load a trained bundle for prediction; see `pipeline.predict.classifier.load`."""
    from pipeline.predict.classifier import load as _load

    return _load(model_dir, **kwargs)


def __getattr__(name):
    if name == "Classifier":
        from pipeline.predict.classifier import Classifier

        return Classifier
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
