"""Prediction: bundles, ensembles and routers, their runtimes, streaming and explanations."""

# how a bundle's network may run (pipeline.predict.classifier.load); here, where the CLI's options can read it
# without importing the bundle code
RUNTIMES = ("auto", "onnx", "onnx-int8", "keras")
