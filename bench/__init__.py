"""Benchmarks: each script prints a table and writes JSON (bench/results/); see bench/README.md."""
