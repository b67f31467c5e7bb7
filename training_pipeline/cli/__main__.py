"""`python -m training_pipeline.cli`: the same as the `training-pipeline` command."""

import sys

from training_pipeline.cli import main

sys.exit(main())
