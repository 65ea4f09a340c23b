"""Containers: Sequential (whose chains of layers nn.fusion runs as fused kernels) and ModuleList."""
from __future__ import annotations

from .. import fusion
from .module import Module


class Sequential(Module):
    """Runs its modules in order. Chains that a fused kernel computes in one pass (a Linear or
    Conv2d followed by its activation; Conv2d -> ReLU -> MaxPool2d) run that way: see nn.fusion
    for the rules. The numbers are those of the modules run one by one."""

    def __init__(self, *modules: Module):
        super().__init__()
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: item {i} is a {type(m).__name__}, not a Module")
            self.add_module(str(i), m)

    def __getitem__(self, i):
        items = list(self._modules.values())
        return Sequential(*items[i]) if isinstance(i, slice) else items[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module: Module) -> Sequential:
        self.add_module(str(len(self)), module)
        return self

    def forward(self, x):
        for step in fusion.plan(list(self._modules.items()), type(self).__name__):
            x = step(x)
        return x


class ModuleList(Module):
    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module):
        self.add_module(str(len(self._modules)), module)
        return self

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())
