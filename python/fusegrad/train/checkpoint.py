"""The Trainer's checkpoint: model, optimizer and scheduler state, the epoch, fusegrad's RNG state,
the shuffling seed and the loader's position, in one safetensors file (arrays as tensors, the rest
as JSON metadata), written atomically. `extra` carries the caller's own facts along (the command
line stores its --model and --data there), readable without loading anything: read_info(path)."""
from __future__ import annotations

import json

import numpy as np

from ..io import load_metadata, load_with_metadata, save
from ..random import default_generator

FORMAT = "fusegrad.trainer/1"


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"checkpoint: cannot store a {type(value).__name__} in the metadata")


def save_checkpoint(trainer, path, extra: dict | None = None) -> None:
    """Writes everything a Trainer needs to resume exactly to `path`. extra: a dict of JSON values
    stored beside it (load_checkpoint and read_info return it as info["extra"])."""
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"save_checkpoint: extra must be a dict, got {type(extra).__name__}")
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
        "extra": extra or {},
    }
    save(tensors, path, metadata={"fusegrad.trainer": json.dumps(info, default=_json_default)})


def _info(metadata: dict, path) -> dict:
    if "fusegrad.trainer" not in metadata:
        raise ValueError(f"{path}: not a Trainer checkpoint (no 'fusegrad.trainer' metadata); for saved "
                         "weights use model.load_state_dict(fusegrad.load(path))")
    try:
        info = json.loads(metadata["fusegrad.trainer"])
        if info.get("format") != FORMAT:
            raise ValueError(f"format {info.get('format')!r}, expected {FORMAT!r}")
        missing = [key for key in ("epoch", "seed", "rng", "optimizer") if key not in info]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
        info.setdefault("extra", {})  # checkpoints written before `extra` existed
        if not isinstance(info["extra"], dict):
            raise ValueError("'extra' is not an object")
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: corrupt Trainer checkpoint metadata ({err})") from None
    return info


def read_info(path) -> dict:
    """What a checkpoint says about itself ("epoch", "extra", "optimizer", ...), from its header
    alone: cheap, touches no trainer, and does not verify the tensor data (load_checkpoint does)."""
    return _info(load_metadata(path), path)


def load_checkpoint(trainer, path) -> dict:
    """Restores what save_checkpoint stored into `trainer`; returns the stored metadata (with
    "extra"). A corrupt file raises ValueError; a checkpoint of another model (missing or
    unexpected weights) KeyError naming them; wrong shapes ValueError naming them. On any error
    the trainer is left as it was."""
    tensors, metadata = load_with_metadata(path)
    info = _info(metadata, path)
    opt_info = info["optimizer"]
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
