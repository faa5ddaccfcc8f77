"""The training state saved beside the weights in ``latest`` (``state.pt``) so a resume continues
bitwise: counters, optimiser and GradScaler states, image pools, learned loss weights and the RNG
streams. Its keys are a file format: old checkpoints must keep loading.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cyclegan import checkpoint as ckpt_io
from cyclegan.errors import CheckpointError
from cyclegan.training.step import TrainStep


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def training_state(step: TrainStep, *, global_step: int, epoch: int, epoch_step: int) -> dict:
    return {
        "step": global_step,
        "epoch": epoch,
        "epoch_step": epoch_step,
        # epoch_step counts global batches: resuming with another process count would skip or
        # repeat data, so the count is recorded and checked.
        "world_size": step.dist.world_size,
        "opt_g": step.opt_g.state_dict(),
        "opt_d": step.opt_d.state_dict(),
        "scaler": step.scaler.state_dict(),
        # "pool_a" / "pool_b": the pools of D_A / D_B (a one-sided kind has D_B's alone)
        **{f"pool_{name[-1].lower()}": pool.state_dict() for name, pool in step.pools.items()},
        "rng": _rng_state(),
        **({"loss_weights": step.loss_weights.state_dict()} if step.loss_weights is not None else {}),
        **({"lecam": {k: v.state_dict() for k, v in step.lecam.items()}} if step.lecam else {}),
    }


def restore_training_state(step: TrainStep, ckpt: Path) -> dict:
    for name, net in step.checkpoint_networks().items():
        ckpt_io.load_into(net, ckpt, name)
    state = ckpt_io.load_state(ckpt)
    try:
        # A loadable but foreign state.pt (a list, missing counters) must be a CheckpointError too.
        for key in ("step", "epoch", "epoch_step"):
            if not isinstance(state[key], int):
                raise TypeError(f"{key} is not an integer")
        saved_world = state.get("world_size", 1)
        if saved_world != step.dist.world_size:
            raise CheckpointError(
                f"{ckpt}: trained with {saved_world} process(es), resumed with {step.dist.world_size}; "
                "resume with the same torchrun --nproc-per-node (and --nnodes)"
            )
        step.opt_g.load_state_dict(state["opt_g"])
        step.opt_d.load_state_dict(state["opt_d"])
        if state.get("scaler"):
            step.scaler.load_state_dict(state["scaler"])
        for name, pool in step.pools.items():
            pool.load_state_dict(state[f"pool_{name[-1].lower()}"], device=step.device)
        if step.loss_weights is not None:
            step.loss_weights.load_state_dict(state["loss_weights"])
        for name, anchors in step.lecam.items():
            anchors.load_state_dict(state["lecam"][name])
        _set_rng_state(state["rng"])
    except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as e:
        raise CheckpointError(
            f"{ckpt / 'state.pt'}: does not match this run ({type(e).__name__}: {e})") from None
    return state

