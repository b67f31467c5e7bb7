"""Dagster: asset keys, resources, IO manager, assets, checks, automation, backfills."""

import warnings

from dagster import BetaWarning, PreviewWarning

# We use Dagster's beta `backfill_policy` and preview features on purpose (single-run range
# backfills); the warnings would repeat on every import in every process and bury real ones.
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)
