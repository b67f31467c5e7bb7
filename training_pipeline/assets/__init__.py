"""Software-defined assets, one module per lineage step.

raw video text -> preprocessed text -> embedding cache (per model) -> labelled dataset (per model)
-> dataset snapshot (per model).
"""
