"""What the code location imports when it loads, in a fresh Python, as a run worker loads it.

A run worker launched by the daemon imports `training_pipeline.definitions` before its first
step, so every package imported at load is paid by every run, and every package imported later
is paid inside a step. The cold build wants neither on its path: scikit-learn (with scipy,
about 2.3 s) is needed by the evaluation only and is imported there; the `openai` client
package is needed by every run that embeds and is imported at load, not between the embedding
step's cache lookup and its first request. Garbage collection waits for the imports and then
skips what they made (`training_pipeline.load_gc`).
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


GARBAGE_COLLECTION = """
import gc, json, sys
if sys.argv[1] == "off":
    gc.disable()
import training_pipeline.definitions
print(json.dumps([gc.isenabled(), gc.get_freeze_count()]))
"""


def collection_after_load(before: str) -> tuple[bool, int]:
    result = subprocess.run(
        [sys.executable, "-c", GARBAGE_COLLECTION, before],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    enabled, frozen = json.loads(result.stdout.strip().splitlines()[-1])
    return enabled, frozen


def test_loading_freezes_what_the_imports_made_and_restores_garbage_collection():
    enabled, frozen = collection_after_load("on")
    assert enabled  # collection runs again once the code location is loaded...
    assert frozen > 100_000  # ...and skips the modules, classes and functions it imported
    assert collection_after_load("off")[0] is False  # a process that had it off keeps it off
