"""Serving runtime: predictors that wrap loaded models, and the pool that loads and evicts them."""
