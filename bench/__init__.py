"""The side-by-side benchmark of issue 4: `make bench` or `python -m bench.run`.

Timings never decide a test; `tests/e2e/test_bench_smoke.py` only checks that
the harness runs end to end.
"""
