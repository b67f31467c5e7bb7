"""Embedding models: clients for each kind of model, request batching, rate limiting, retries,
answer validation, progress, and the engine that runs them (see README, "Embedding engine")."""
