"""lit_papers: classic deep-learning papers, faithfully reimplemented on PyTorch Lightning."""

__version__ = "0.1.0"
