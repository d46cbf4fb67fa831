"""Exponential moving average of a module's trainable weights, for evaluation and the saved model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import nn


class EMA:
    """shadow <- decay * shadow + (1 - decay) * weight after each `update()`, over the parameters that
    required grad when it was made; the shadow follows the module to its device."""

    def __init__(self, module: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.module, self.decay = module, decay
        self.shadow = {name: p.detach().clone() for name, p in module.named_parameters() if p.requires_grad}

    def _parameters(self) -> dict[str, nn.Parameter]:
        params = dict(self.module.named_parameters())
        return {name: params[name] for name in self.shadow}

    @torch.no_grad()
    def update(self) -> None:
        for name, param in self._parameters().items():
            shadow = self.shadow[name]
            if shadow.device != param.device:  # the module was moved (e.g. by accelerator.prepare)
                shadow = self.shadow[name] = shadow.to(param.device)
            shadow.mul_(self.decay).add_(param.detach(), alpha=1 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights as contiguous CPU tensors (ready for safetensors)."""
        return {name: shadow.detach().contiguous().cpu() for name, shadow in self.shadow.items()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state.keys() != self.shadow.keys():
            missing, unexpected = sorted(self.shadow.keys() - state.keys()), sorted(state.keys() - self.shadow.keys())
            raise ValueError(f"EMA weights do not match the module: missing {missing[:3]}, unexpected {unexpected[:3]}")
        for name, shadow in self.shadow.items():
            shadow.copy_(state[name])

    @contextmanager
    def applied(self) -> Iterator[nn.Module]:
        """The module with the averaged weights swapped in (to evaluate or save it); the trained ones come back
        afterwards."""
        params = self._parameters()
        trained = {name: param.detach().clone() for name, param in params.items()}
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(self.shadow[name])
        try:
            yield self.module
        finally:
            with torch.no_grad():
                for name, param in params.items():
                    param.copy_(trained[name])


def averaged(ema: EMA | None) -> AbstractContextManager:
    """`ema.applied()`, or a no-op for a run without weight averaging."""
    return nullcontext() if ema is None else ema.applied()
