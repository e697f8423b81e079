"""SPPNetLitModule: SPP-net's detection recipe (He et al. 2014, sec. 4.1) on the shared region stages of
:mod:`lit_papers.detection.region_classifiers` (the same fine-tuning sampler, SVMs with hard-negative mining,
box regression and NMS as R-CNN; only the network computes region features differently).

``freeze_backbone``: sec. 4.1 fine-tunes only the fully connected layers (the conv layers keep their pre-trained
ImageNet weights), which is what ``true`` does: the optimizer gets fc6 / fc7 / the classifier only and the conv
body stays in eval mode. Without pre-trained conv weights (the shapes configs train from scratch on CPU) the conv
body must be trained too, so those configs set ``false``: a stated deviation. Every other argument is
:class:`~lit_papers.detection.region_classifiers.RegionDetectorLitModule`'s (sec. 4.1 takes R-CNN's SVM and
regression settings).
"""

from __future__ import annotations

from lit_papers.detection.region_classifiers import RegionDetectorLitModule
from lit_papers.schedules import optimizer_config


class SPPNetLitModule(RegionDetectorLitModule):
    """SPP-net detection: fine-tune (fc only, or everything without pre-training), then SVMs and regressors."""

    def __init__(self, *, freeze_backbone: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            for p in self.model.backbone.parameters():
                p.requires_grad_(False)

    def on_train_epoch_start(self) -> None:
        if self.freeze_backbone:  # pre-trained conv statistics stay as they are
            self.model.backbone.eval()

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        return optimizer_config(self.optimizer_factory(params), self.scheduler_factory)
