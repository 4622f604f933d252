"""Benchmarks for trio_msg (see benchmarks/README.md)."""
