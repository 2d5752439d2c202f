"""Benchmark suites of sparse_tickets (pytest-benchmark) and the tools that run them and turn
their JSON into tables and plots. Run with ``python -m benchmarks.run``; see README.md."""
