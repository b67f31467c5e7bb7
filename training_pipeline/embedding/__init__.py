"""Embedding models: clients for each kind of model, request batching, answer validation."""
