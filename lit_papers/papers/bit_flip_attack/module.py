"""BitFlipAttackLitModule: quantise the victim, then the progressive bit search of Rakin et al. 2019.

``lit-papers test --config configs/bit_flip_attack/<variant>.yaml`` collects ``num_images`` test images (the
evaluation set: accuracy after every flip is measured on all of them), draws the attack batch
(``attack_batch_size`` of them, seeded by ``attack_seed``), and logs (fractions; the card scales to percent):

* ``test/acc_float``, ``test/acc_quant``: accuracy before / after 8-bit quantisation (each ``_n`` = images);
* ``test/bfa_flips``: bits flipped until accuracy <= ``stop_accuracy`` (``max_flips`` if never reached;
  ``test/bfa_reached`` 1/0), ``test/bfa_acc``: the accuracy then;
* ``test/random_acc``: accuracy after ``random_flips`` random bit flips (the paper's baseline), ``test/random_drop``
  = ``acc_quant - random_acc``; ``test/bfa_search_s_per_flip``: wall time of the search per flipped bit.

The curves (accuracy after every BFA flip; after every ``random_eval_every`` random flips) go to
``<run dir>/bfa_curve.json``; :mod:`.pictures` draws them. The victim's float weights are restored afterwards.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from lit_papers.attacks.module import AttackLitModule
from lit_papers.attacks.victim import Victim
from lit_papers.papers.bit_flip_attack.model import BitFlipAttack, QuantizedWeights, accuracy, random_flip


class BitFlipAttackLitModule(AttackLitModule):
    def __init__(self, *, victim: Victim, num_images: int | None = 10000, bits: int = 8,
                 attack_batch_size: int = 128, top_k: int = 1, stop_accuracy: float = 0.11, max_flips: int = 100,
                 random_flips: int = 100, random_eval_every: int = 10, attack_seed: int = 0,
                 sample_seed: int | None = None, optimizer: OptimizerCallable | None = None,
                 scheduler: LRSchedulerCallable | None = None) -> None:
        super().__init__(victim=victim, num_images=num_images, sample_seed=sample_seed, optimizer=optimizer,
                         scheduler=scheduler)
        self.save_hyperparameters(ignore=["victim", "optimizer", "scheduler"])
        self.bits, self.attack_batch_size, self.top_k = bits, attack_batch_size, top_k
        self.stop_accuracy, self.max_flips = stop_accuracy, max_flips
        self.random_flips, self.random_eval_every, self.attack_seed = random_flips, random_eval_every, attack_seed
        self.curve: dict = {}

    def run_attack(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        victim = self.victim.eval()
        n = len(images)
        generator = torch.Generator().manual_seed(self.attack_seed)
        pick = torch.randperm(n, generator=generator)[: self.attack_batch_size].to(images.device)
        x_attack, y_attack = images[pick], labels[pick]
        acc_float = accuracy(victim, images, labels)
        weights = QuantizedWeights(victim.network, self.bits)
        acc_quant = accuracy(victim, images, labels)
        try:
            attack = BitFlipAttack(victim, weights, x_attack, y_attack, self.top_k)
            bfa_acc, flips, history, start = [acc_quant], 0, [], time.time()
            while bfa_acc[-1] > self.stop_accuracy and flips < self.max_flips:
                flip = attack.step()
                if flip is None:
                    break
                flips += len(flip.index)
                history.append({"layer": flip.layer, "index": flip.index, "bit": flip.bit, "loss": flip.loss,
                                "flips": flips})
                bfa_acc.append(accuracy(victim, images, labels))
            search_s = time.time() - start
        finally:
            weights.restore_float()
        # random baseline from the same quantised network
        weights = QuantizedWeights(victim.network, self.bits)
        try:
            random_acc, rng = [(0, acc_quant)], torch.Generator().manual_seed(self.attack_seed + 1)
            for i in range(1, self.random_flips + 1):
                random_flip(weights, rng)
                if i % self.random_eval_every == 0 or i == self.random_flips:
                    random_acc.append((i, accuracy(victim, images, labels)))
        finally:
            weights.restore_float()
        reached = bfa_acc[-1] <= self.stop_accuracy
        self.curve = {"eval_images": n, "attack_batch": len(pick), "bits": self.bits, "top_k": self.top_k,
                      "acc_float": acc_float, "acc_quant": acc_quant, "bfa_accuracy": bfa_acc, "bfa_flips": history,
                      "random": [{"flips": i, "accuracy": a} for i, a in random_acc], "search_s": search_s,
                      "search_s_per_iteration": search_s / max(1, len(history))}
        if self._trainer is not None and self.trainer.is_global_zero:
            out = Path(self.trainer.default_root_dir) / "bfa_curve.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(self.curve, indent=1))
            tmp.replace(out)
        return {"acc_float": acc_float, "acc_float_n": n, "acc_quant": acc_quant, "acc_quant_n": n,
                "bfa_flips": flips, "bfa_reached": float(reached), "bfa_acc": bfa_acc[-1], "bfa_acc_n": n,
                "random_acc": random_acc[-1][1], "random_acc_n": n, "random_drop": acc_quant - random_acc[-1][1], "bfa_search_s_per_flip": search_s / max(1, flips)}
