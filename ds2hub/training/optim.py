"""Learning-rate schedule for recipes: torch offers warm-up then decay only as `SequentialLR` over
scheduler *instances*, which a YAML recipe cannot express; this one takes plain numbers."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class WarmupAnnealLR(LambdaLR):
    """Linear warm-up over `warmup_steps`, then the learning rate is divided by `anneal_factor`
    every `anneal_steps` steps (the paper anneals by 1.2 per epoch), smoothly, and never below
    `min_scale` of its peak. Step it every optimizer step.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int = 0,
        anneal_factor: float = 1.2,
        anneal_steps: int = 1000,
        min_scale: float = 0.01,
        last_epoch: int = -1,
    ) -> None:
        if anneal_factor < 1 or anneal_steps < 1:
            raise ValueError("anneal_factor must be >= 1 and anneal_steps >= 1")
        self.warmup_steps = warmup_steps
        log_decay = math.log(anneal_factor) / anneal_steps

        def scale(step: int) -> float:
            if step < warmup_steps:
                return (step + 1) / warmup_steps
            return max(min_scale, math.exp(-log_decay * (step - warmup_steps)))

        super().__init__(optimizer, scale, last_epoch)
