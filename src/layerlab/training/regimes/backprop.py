"""Backpropagation through the whole network: one stage of `steps` updates (`freeze_weights` keeps chosen weights
fixed, paper 004's weight domination)."""

from __future__ import annotations

import torch

from layerlab.catalog.regimes import BackpropParams
from layerlab.nets.layers import unfrozen_parameters
from layerlab.training.optim import make_optimizer
from layerlab.training.regime import Regime
from layerlab.training.stage import Stage


class Backprop(Regime):
    def stage(self, index: int) -> Stage:
        cell, model = self.cell, self.model
        params = unfrozen_parameters(model, cell[BackpropParams].freeze_weights) + self.extra
        optimizer = make_optimizer(cell.optimizer, params)
        return Stage(regime=self, index=0, offset=0, steps=cell.run.steps, last=True, net=model, trainable=params,
                     optimizer=optimizer,
                     schedule=torch.optim.lr_scheduler.MultiStepLR(optimizer, cell.optimizer.lr_milestones, gamma=0.1),
                     forward=lambda x, t: model(x))
