"""The benchmark cases, one module per kernel family, each with a cases() -> list[Case]."""
from __future__ import annotations

from importlib import import_module

FAMILY_MODULES = ["activation", "softmax", "gemm", "int8", "conv", "pool", "optim", "rnn", "attention", "train", "interop",
                  "quantization"]


def all_cases():
    cases = []
    for name in FAMILY_MODULES:
        cases += import_module(f"{__name__}.{name}").cases()
    names = [c.name for c in cases]
    duplicated = {n for n in names if names.count(n) > 1}
    if duplicated:
        raise RuntimeError(f"duplicate benchmark case names: {sorted(duplicated)}")
    return cases
