"""Benchmarks (`make bench`): numbers and ratios measured in one run, on real parts.

Results go to docs/bench/results.json and plots to docs/bench/*.png;
docs/bench/README.md summarises them. Nothing here is a pass/fail test.
"""
