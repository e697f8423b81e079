"""Faster R-CNN (Ren et al. 2015), the Fast R-CNN setting (Girshick 2015) and FPN (Lin et al. 2017)."""
