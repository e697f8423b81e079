"""R-CNN (Girshick et al. 2014)."""
