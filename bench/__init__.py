"""Benchmarks: ``python -m bench.serve`` (see docs/PERFORMANCE.md). Never imported by the product."""
