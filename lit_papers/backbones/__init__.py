"""Backbones share one contract: ``forward(x) -> OrderedDict[name, feature map]``, plus ``out_channels``
(list of ints, one per returned map) and ``strides`` (list of ints, input pixels per feature pixel)."""
