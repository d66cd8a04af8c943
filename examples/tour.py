"""A tour of pyresilience: each pattern in a few lines, in-process, no server.

Run it with `make demo`. Every section uses a ManualClock where time matters,
so the tour is instant and prints the same thing every time.
"""
from __future__ import annotations

import pyresilience as pr


def section(title: str) -> None:
    print(f"\n== {title} ==")


# -- rate limiters (issue 2) --

# -- rate limiter family (issue 3) --

# -- circuit breaker (issue 4) --

# -- retry (issue 5) --

# -- bulkhead and queues (issue 6) --


def main() -> None:
    print(f"pyresilience {pr.__version__}")
    # -- calls (one line per section, in issue order) --
    print("\ntour done")


if __name__ == "__main__":
    main()
