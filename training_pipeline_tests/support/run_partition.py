"""Runs the refresh job of one model for one aid range, as a separate process would in production.

Usage: python -m training_pipeline_tests.support.run_partition MODEL RANGE_KEY
Reads DAGSTER_HOME (the instance) and the pipeline's usual environment variables; prints the
run id and exits with 0 if the run succeeded, 1 if it failed.
"""

import os
import sys

from dagster import DagsterInstance, execute_job, reconstructable

from training_pipeline.definitions import build_definitions
from training_pipeline.defs.keys import refresh_job_name


def refresh_job():
    """The model's refresh job (reconstructable: the model comes from the environment)."""
    defs = build_definitions()
    return defs.get_job_def(refresh_job_name(os.environ["RUN_PARTITION_MODEL"]))


def main(model: str, key: str) -> int:
    os.environ["RUN_PARTITION_MODEL"] = model
    with DagsterInstance.get() as instance:
        result = execute_job(
            reconstructable(refresh_job),
            instance=instance,
            tags={"dagster/partition": key},
            raise_on_error=False,
        )
    print(result.run_id)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
