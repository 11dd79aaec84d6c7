"""Benchmarks (``python -m lab bench …``, ``python -m lab cost``): speed and memory measured as ratios side by side."""
