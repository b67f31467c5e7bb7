"""What the code location imports when it loads, in a fresh Python, as a run worker loads it.

A run worker launched by the daemon imports `training_pipeline.definitions` before its first
step, so every package imported at load is paid by every run, and every package imported later
is paid inside a step. The cold build wants neither on its path: scikit-learn (with scipy,
about 2.3 s) is needed by the evaluation only and is imported there; the `openai` client
package is needed by every run that embeds and is imported at load, not between the embedding
step's cache lookup and its first request.
"""

import json
import subprocess
import sys

LOADED = """
import json, sys
import training_pipeline.definitions
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def loaded_packages() -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", LOADED], capture_output=True, text=True, check=True, timeout=300
    )
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_the_code_location_loads_without_scikit_learn_and_with_the_api_client():
    packages = loaded_packages()
    assert "sklearn" not in packages
    assert "scipy" not in packages
    assert "openai" in packages
    assert "dagster" in packages  # the check itself works: the location did load
