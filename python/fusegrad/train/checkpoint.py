"""The Trainer's checkpoint: model, optimizer and scheduler state, the epoch, fusegrad's RNG state,
the shuffling seed and the loader's position, in one safetensors file (arrays as tensors, the rest
as JSON metadata), written atomically."""
from __future__ import annotations

import json

import numpy as np

from ..io import load_with_metadata, save
from ..random import default_generator

FORMAT = "fusegrad.trainer/1"


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"checkpoint: cannot store a {type(value).__name__} in the metadata")


def save_checkpoint(trainer, path) -> None:
    """Writes everything a Trainer needs to resume exactly to `path`."""
    tensors = {"model." + k: v for k, v in trainer.model.state_dict().items()}
    opt_state = trainer.optimizer.state_dict()
    scalars = {}
    for index, entry in opt_state["state"].items():
        scalars[str(index)] = {}
        for name, value in entry.items():
            if hasattr(value, "shape") and value.shape != ():
                tensors[f"optimizer.state.{index}.{name}"] = value
            else:
                scalars[str(index)][name] = value.item() if hasattr(value, "item") else value
    info = {
        "format": FORMAT, "epoch": trainer.epoch, "seed": trainer.seed,
        "rng": default_generator().bit_generator.state,
        "optimizer": {"class": type(trainer.optimizer).__name__, "param_groups": opt_state["param_groups"],
                      "scalars": scalars},
        "scheduler": None if trainer.scheduler is None else {"class": type(trainer.scheduler).__name__,
                                                             "state": trainer.scheduler.state_dict()},
        "loader": None if trainer._loader is None else trainer._loader.state_dict(),
    }
    save(tensors, path, metadata={"fusegrad.trainer": json.dumps(info, default=_json_default)})


def load_checkpoint(trainer, path) -> dict:
    """Restores what save_checkpoint stored into `trainer`; returns the stored metadata. A corrupt
    file raises ValueError; a checkpoint of another model (missing or unexpected weights) KeyError
    naming them; wrong shapes ValueError naming them. On any error the trainer is left as it was."""
    tensors, metadata = load_with_metadata(path)
    if "fusegrad.trainer" not in metadata:
        raise ValueError(f"{path}: not a Trainer checkpoint (no 'fusegrad.trainer' metadata); for saved "
                         "weights use model.load_state_dict(fusegrad.load(path))")
    try:
        info = json.loads(metadata["fusegrad.trainer"])
        if info.get("format") != FORMAT:
            raise ValueError(f"format {info.get('format')!r}, expected {FORMAT!r}")
        opt_info = info["optimizer"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: corrupt Trainer checkpoint metadata ({err})") from None
    if opt_info["class"] != type(trainer.optimizer).__name__:
        raise ValueError(f"{path}: the checkpoint holds {opt_info['class']} state, this trainer has "
                         f"{type(trainer.optimizer).__name__}")
    sched = info.get("scheduler")
    if (sched is None) != (trainer.scheduler is None) or (
            sched is not None and sched["class"] != type(trainer.scheduler).__name__):
        have = "none" if trainer.scheduler is None else type(trainer.scheduler).__name__
        raise ValueError(f"{path}: the checkpoint's scheduler is {sched['class'] if sched else 'none'}, "
                         f"this trainer's is {have}")
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    stray = [k for k in tensors if not k.startswith(("model.", "optimizer.state."))]
    if stray:
        raise ValueError(f"{path}: unexpected entries in a Trainer checkpoint: {stray}")
    opt_entries = {int(i): dict(v) for i, v in opt_info["scalars"].items()}
    for key, value in tensors.items():
        if key.startswith("optimizer.state."):
            index, name = key[len("optimizer.state."):].split(".", 1)
            opt_entries.setdefault(int(index), {})[name] = value.data
    backup = {k: v.data.copy() for k, v in trainer.model.state_dict().items()}
    try:
        trainer.model.load_state_dict(model_state)
        trainer.optimizer.load_state_dict({"state": opt_entries, "param_groups": opt_info["param_groups"]})
    except BaseException:
        trainer.model.load_state_dict(backup)
        raise
    if sched is not None:
        trainer.scheduler.load_state_dict(sched["state"])
    trainer.epoch, trainer.seed = int(info["epoch"]), int(info["seed"])
    default_generator().bit_generator.state = info["rng"]
    trainer._pending_loader_state = info.get("loader")
    return info
