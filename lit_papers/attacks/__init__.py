"""Shared machinery of the adversarial papers (szegedy_lbfgs, feinman_detection, bit_flip_attack).

:mod:`.victim`: the attacked classifier -- any ``nn.Module`` given by ``class_path`` in a config, its weights and
input normalisation read from a trained LightningModule checkpoint, wrapped so that it takes images in [0, 1].
:mod:`.module`: the LightningModule base the papers' modules extend (victim loading, [0, 1] batches, training a
tiny victim in place for the test configs).
"""
