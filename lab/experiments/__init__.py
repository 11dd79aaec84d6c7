"""Experiments: the named grids, training them over seeds (sweep, tune), their tables, the papers' numbers, the demo."""
