"""Measurement recipes: each ``python -m jobs.bench.<name>`` prints side-by-side figures for a BENCHMARKS
file; their logic lives here, out of the library."""
