"""Distillation losses: plain functions in `functional`, learnable parts and objectives beside them."""
