"""Embedding models: clients, batching, rate limits, retries, validation, progress, engine."""
