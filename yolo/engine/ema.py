"""Exponential moving average (EMA) of the weights.

After every optimizer update:  ema = d * ema + (1 - d) * weights,  d = decay * (1 - exp(-updates / tau)).
The average smooths out the noise of the last updates, so it usually evaluates better than the raw weights. The
warm-up of d matters: with a fixed d = 0.9999 the average would remember the random initial weights for ~10,000
updates; d grows from 0 instead, so early on the EMA simply follows the model.
"""
import copy
import math

import torch


class ModelEMA:
    def __init__(self, model, decay=0.9999, tau=2000.0, updates=0):
        self.module = copy.deepcopy(model).eval()  # never trained directly, always in eval mode
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, updates

    def current_decay(self):
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model):
        """Blend in the weights of `model` (the bare model, not a DDP/DataParallel wrapper)."""
        self.updates += 1
        d = self.current_decay()
        model_state = model.state_dict()
        for name, ema_value in self.module.state_dict().items():
            value = model_state[name].detach()
            if ema_value.dtype.is_floating_point:  # parameters and BN running statistics
                ema_value.lerp_(value.to(ema_value.dtype), 1 - d)
            else:                                  # counters such as BN's num_batches_tracked
                ema_value.copy_(value)
