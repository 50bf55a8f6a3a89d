"""Prediction: bundles, ensembles and routers, their runtimes, streaming and explanations."""
