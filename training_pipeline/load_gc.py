"""Cyclic garbage collection paused while the code location imports, then what it made frozen.

A run worker started by the daemon (and every code server) imports the code location before
its first step. The import makes a few hundred thousand objects that live as long as the
process (modules, classes, functions: Dagster's, pandas', `openai`'s, ours), and while it does,
CPython runs full collections over the ever larger heap for nothing: 0.44 s of a 2.2 s import
in a fresh Python on a loaded machine (`python -X importtime -c "import
training_pipeline.definitions"`, with and without `gc.disable()`), paid by every such run.

So `training_pipeline.definitions` imports this module first, which pauses collection, and
calls `resume()` after its imports: `gc.freeze()` moves everything alive to the permanent
generation (later collections in the run do not walk it either), and collection comes back on
if it was on before. An import that fails leaves collection paused in a process that cannot
load the code location anyway.
"""

import gc

_was_enabled = gc.isenabled()
gc.disable()


def resume() -> None:
    """Freeze what the imports made and let collection run again (if it ran before)."""
    gc.freeze()
    if _was_enabled:
        gc.enable()
