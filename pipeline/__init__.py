"""ksent: a Korean review sentiment pipeline (see README.md).

`pipeline.load(...)` returns a `pipeline.predict.classifier.Classifier`; importing `pipeline` stays light.
"""
__version__ = "0.1.0"


def load(model_dir=None, **kwargs):
    """Load a trained bundle for prediction; see `pipeline.predict.classifier.load`."""
    from pipeline.predict.classifier import load as _load

    return _load(model_dir, **kwargs)
