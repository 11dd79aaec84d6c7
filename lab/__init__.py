"""The CLIP distillation lab."""

# The lab's release: stamped into every lesson notebook's metadata (python -m lab lessons sync) and the wheel.
__version__ = "0.1.0"
