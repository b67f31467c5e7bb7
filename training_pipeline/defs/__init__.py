"""Dagster: asset keys, resources, IO manager, assets, checks, automation, backfills."""
