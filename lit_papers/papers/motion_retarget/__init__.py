"""Aberman et al. 2019, "Learning Character-Agnostic Motion for Motion Retargeting in 2D" (SIGGRAPH)."""
