"""Prototypical Networks for Few-shot Learning (Snell, Swersky, Zemel, NeurIPS 2017)."""
