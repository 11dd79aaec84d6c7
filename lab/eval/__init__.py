"""Evaluation: zero-shot accuracy, retrieval, geometry fidelity, and the suite that runs them."""
