"""Cost of checking a device key in `farmctl serve` (issue 16), against the one-key compare.

    python bench/serve_keys.py [keys] [runs]

Ours: `KeyRing.match` with `keys` per-site keys (default 50) in the hashed store: SHA-256 of the
offered key, a dict lookup, the once-a-second look at the store. Baseline: the single key's
constant-time compare `farmctl serve` did before (`ApiKey.matches`). Runs alternate (ours,
baseline, ...); each is the best of 3 x 100,000 calls; the ratio is the median of the pairs.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smartfarm_cli.serve.keys import ApiKey, KeyRing, KeyStore

CALLS = 100_000


def per_call(fn) -> float:
    return min(timeit.repeat(fn, number=CALLS, repeat=3)) / CALLS


def main(keys: int = 50, runs: int = 7) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = KeyStore(Path(folder))
        values = [store.add(f"site-{i}")[1] for i in range(keys)]
        store.close()
        ring = KeyRing(KeyStore(Path(folder), create=False), None)
        offered = values[keys // 2]
        single = ApiKey(offered, "baseline")
        ours, base, ratios = [], [], []
        for _ in range(runs):
            ours.append(per_call(lambda: ring.match(offered)))
            base.append(per_call(lambda: single.matches(offered)))
            ratios.append(ours[-1] / base[-1])
        ring.store.close()
    print(
        f"KeyRing.match ({keys} keys): {statistics.median(ours) * 1e6:.2f} us per request; "
        f"ApiKey.matches (one key): {statistics.median(base) * 1e6:.2f} us; "
        f"ratio {statistics.median(ratios):.2f}x (median of {runs} interleaved pairs)"
    )


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
