"""SPP-net (He et al. 2014)."""
