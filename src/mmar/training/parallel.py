"""Data parallelism from outside the model: ``parallelize(model, cfg) -> model`` (torchtitan's cut).

    torchrun --nproc_per_node N -m mmar train --config FILE --set parallel.strategy=fsdp

- ``ddp``: ``DistributedDataParallel``; every rank holds the whole model, gradients are averaged.
- ``fsdp``: FSDP2, ``torch.distributed.fsdp.fully_shard`` on every transformer block of the LLM,
  then on the root (the embedding, LM head, EmbeddingViT, diffusion head, [MASK] vector), so each
  rank stores 1/N of the weights, gradients and AdamW states. The frozen image tokenizer (VAE)
  is left out (``ignored_params``): it has no gradient and every rank needs all of it.

Backend by device: nccl on GPU, gloo on CPU. ``train.batch_size`` is the *global* batch: every
optimiser step sees the same ``batch_size`` samples, whatever the world size; rank r trains on
slice r of each batch (:class:`ShardedBatchSampler`). The losses are normalised by the global
token counts (:func:`global_mean_loss`), so N ranks with global batch G compute the gradient of
one process with batch G. Checkpoints hold full (unsharded) tensors written by rank 0, keyed by
parameter name, so a run saved at one world size resumes at another.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
import torch.distributed as dist
from torch import nn

if TYPE_CHECKING:
    from mmar.model.mmar import MMARModel
    from mmar.training.data_order import ResumableBatchSampler

from mmar.config import Config, ConfigError, check


@dataclass
class ParallelConfig(Config):
    """How training is spread over the processes torchrun starts.

    strategy: "none" (one process), "ddp" (replicated weights, averaged gradients) or "fsdp"
      (FSDP2: weights, gradients and optimizer states sharded over the ranks).
    backend: "auto" (nccl when training on GPU, gloo on CPU), or "nccl" / "gloo".
    fsdp_reshard_after_forward: free each block's gathered weights after its forward (ZeRO-3,
      least memory) or keep them until its backward (ZeRO-2, less communication).
    fsdp_param_dtype: dtype FSDP gathers and computes the weights in ("bf16" halves the
      communication; gradients are still reduced in fp32). The optimizer always keeps fp32.
    """

    strategy: Literal["none", "ddp", "fsdp"] = "none"
    backend: Literal["auto", "nccl", "gloo"] = "auto"
    fsdp_reshard_after_forward: bool = True
    fsdp_param_dtype: Literal["fp32", "bf16"] = "fp32"

    def validate(self) -> None:
        super().validate()
        check(
            self.strategy == "fsdp" or self.fsdp_param_dtype == "fp32",
            f"{type(self).__name__}.fsdp_param_dtype",
            f"only applies to strategy 'fsdp' (got strategy {self.strategy!r}); "
            "leave it at fp32 or set strategy: fsdp",
        )


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    strategy: str = "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.strategy != "none"


def backend_for(device: torch.device, cfg: ParallelConfig) -> str:
    """nccl for CUDA tensors, gloo for CPU ones (unless the config names one)."""
    if cfg.backend != "auto":
        return cfg.backend
    return "nccl" if device.type == "cuda" else "gloo"


def init_distributed(cfg: ParallelConfig, device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR...).

    Returns the job's DistInfo and this rank's device (``cuda:LOCAL_RANK`` on GPU).
    A torchrun job of several processes with strategy "none" is refused: every rank would train
    the same model on the same data and overwrite the same checkpoints.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.strategy == "none":
        if world > 1:
            raise ConfigError(
                f"RunConfig.parallel.strategy: torchrun started {world} processes but the "
                "strategy is 'none'; set parallel.strategy: ddp (or fsdp), e.g. --set "
                "parallel.strategy=ddp"
            )
        return DistInfo(), device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ:  # a plain `python -m mmar train`: a group of one
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", "29500")
            os.environ.setdefault("RANK", "0")
            os.environ.setdefault("WORLD_SIZE", "1")
        dist.init_process_group(
            backend_for(device, cfg), device_id=device if device.type == "cuda" else None
        )
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, cfg.strategy), device


def parallelize(model: MMARModel, cfg: ParallelConfig, device: torch.device) -> nn.Module:
    """The module to call for training steps; ``model`` keeps its methods and parameter names.

    ddp: returns a DistributedDataParallel wrapper (``model`` itself stays unwrapped).
    fsdp: shards ``model`` in place and returns it.
    Parameter names, and so EMA / checkpoint keys, are those of the unwrapped model in all cases.
    """
    if cfg.strategy == "none":
        return model
    if cfg.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        # find_unused_parameters: a rank whose micro-batch has no image sample (or no masked
        # token) never calls the ViT / diffusion head, and ranks need not agree on that
        return DistributedDataParallel(
            model,
            device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    mp = MixedPrecisionPolicy(
        param_dtype=torch.bfloat16 if cfg.fsdp_param_dtype == "bf16" else None,
        reduce_dtype=torch.float32,
    )
    blocks = list(cast(nn.ModuleList, model.backbone.get_decoder().layers))
    for i, block in enumerate(blocks):
        # the last block's weights are needed again at once by the backward: keep them
        fully_shard(
            block,
            mesh=mesh,
            mp_policy=mp,
            reshard_after_forward=cfg.fsdp_reshard_after_forward and i < len(blocks) - 1,
        )
    sharded: FSDPModule = fully_shard(model, mesh=mesh, mp_policy=mp)
    # as with DDP, ranks may differ in which root-group parameters got a gradient: reduce zeros
    sharded.set_reduce_scatter_unused_params(True)
    return model


class ShardedBatchSampler:
    """Rank ``rank``'s slice of every global batch of a resumable batch sampler.

    Global batch ``[i_0 .. i_{G-1}]`` -> rank r trains on ``i_{r b} .. i_{(r+1) b - 1}``, b = G / N,
    so the union over ranks is exactly the batch one process would train on. The position
    (epoch, offset) is that of the global sampler and does not depend on the world size.
    Like ``DistributedSampler``, but per batch and resumable.
    """

    def __init__(self, sampler: ResumableBatchSampler, rank: int, world_size: int):
        if sampler.batch_size % world_size:
            raise ConfigError(
                f"RunConfig.train.batch_size: the global batch {sampler.batch_size} must be "
                f"divisible by the world size {world_size}, e.g. batch_size: "
                f"{max(world_size, sampler.batch_size // world_size * world_size)}"
            )
        self.sampler, self.rank, self.world_size = sampler, rank, world_size
        self.local_batch_size = sampler.batch_size // world_size

    def __getattr__(self, name: str) -> Any:  # epoch, offset, batch_size, advance, ...
        if name == "sampler":  # not yet set (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.sampler, name)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[int]]:
        b = self.local_batch_size
        for batch in self.sampler:
            yield batch[self.rank * b : (self.rank + 1) * b]


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sums over the ranks of a few numbers (float64, one collective)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


def global_mean_loss(
    out: dict, lambda_img: float, world_size: int, device: torch.device
) -> tuple[torch.Tensor, dict]:
    """The loss to back-propagate on this rank, and the global means to log.

    With W_r the text-CE weight and M_r the masked tokens of rank r (W = sum_r W_r, M likewise),
    the batch's losses are L_text = sum_r W_r L_text,r / W and L_diff = sum_r M_r L_diff,r / M.
    DDP / FSDP average gradients over the N ranks, so rank r back-propagates

        l_r = N (W_r / W) L_text,r + lambda_img N (M_r / M) L_diff,r

    whose rank-average is L_text + lambda_img L_diff: the loss of one process with the whole
    batch (per-rank means would weight a token of a short-captioned rank more).
    out: MMAR.forward's dict ("loss_text", "loss_diff" with graph, "text_weight", "n_masked").
    """
    w, m = float(out["text_weight"]), float(out["n_masked"])
    lt, ld = out["loss_text"], out["loss_diff"]
    sum_w, sum_m, sum_lt, sum_ld = all_reduce_sum(
        [w, m, float(lt.detach()) * w, float(ld.detach()) * m], device
    )
    zero = lt.new_zeros(())
    text = lt * (world_size * w / sum_w) if sum_w > 0 else zero
    diff = ld * (world_size * m / sum_m) if sum_m > 0 else zero
    logged = {
        "loss_text": sum_lt / sum_w if sum_w > 0 else 0.0,
        "loss_diff": sum_ld / sum_m if sum_m > 0 else 0.0,
    }
    logged["loss"] = logged["loss_text"] + lambda_img * logged["loss_diff"]
    return text + lambda_img * diff, logged


# --- checkpoints: full tensors, written by rank 0 -------------------------------------------
def full_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Gather sharded (DTensor) entries to full CPU tensors; a collective when any is sharded."""
    from torch.distributed.tensor import DTensor

    return {
        k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().cpu()
        for k, v in state.items()
    }


def shard_like(full: dict[str, torch.Tensor], like: dict[str, torch.Tensor]) -> dict:
    """Full tensors laid out as ``like``'s entries (this rank's shard of the DTensors)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    out = {}
    for k, v in full.items():
        ref = like.get(k)
        if isinstance(ref, DTensor):
            v = distribute_tensor(
                v.to(ref.device, ref.dtype), ref.device_mesh, ref.placements, src_data_rank=None
            )  # every rank read the file: no broadcast
        out[k] = v
    return out


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with full tensors (same names as ``model.state_dict()``).

    Under FSDP every rank must call it; rank 0 gets the tensors (gathered to CPU one at a time).
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sharded = dist.is_initialized() and dist.get_world_size() > 1
    state = get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=sharded)
    )
    return cast(dict[str, torch.Tensor], state)


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer state keyed by parameter name, with full tensors (rank 0 gets them).

    Keyed by name rather than by position, so it loads into any world size and strategy.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    sharded = dist.is_initialized() and dist.get_world_size() > 1
    return get_optimizer_state_dict(
        model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=sharded)
    )


def load_full_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict
) -> None:
    """Load a :func:`full_optimizer_state` dict (every rank passes the whole of it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(
        model, optimizer, state, options=StateDictOptions(full_state_dict=True)
    )


def gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` when not distributed)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
