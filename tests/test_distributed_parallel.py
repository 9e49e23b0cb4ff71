"""mmar.training.parallel pieces that need no process group."""

import pytest
import torch

from mmar.config import ConfigError
from mmar.training.config import RunConfig
from mmar.training.data_order import ResumableBatchSampler
from mmar.training.parallel import (
    DistInfo,
    ParallelConfig,
    ShardedBatchSampler,
    backend_for,
    init_distributed,
)


def test_rank_slices_partition_every_global_batch():
    ranks = [ShardedBatchSampler(ResumableBatchSampler(20, 8, seed=3), r, 4) for r in range(4)]
    one = ResumableBatchSampler(20, 8, seed=3)
    for want, *parts in zip(one, *ranks):
        assert [i for part in parts for i in part] == want and all(len(p) == 2 for p in parts)
    # the position is the global sampler's: the same at any world size
    ranks[0].advance()
    one.advance()
    assert ranks[0].state_dict() == one.state_dict() and len(ranks[0]) == len(one)


def test_indivisible_global_batch_raises():
    with pytest.raises(ConfigError, match="batch_size.*divisible by the world size 3"):
        ShardedBatchSampler(ResumableBatchSampler(20, 8, seed=0), 0, 3)


def test_backend_by_device():
    cfg = ParallelConfig(strategy="ddp")
    assert backend_for(torch.device("cpu"), cfg) == "gloo"
    assert backend_for(torch.device("cuda", 0), cfg) == "nccl"
    assert backend_for(torch.device("cpu"), cfg.replace(backend="nccl")) == "nccl"


def test_parallel_config_in_run_config_and_its_checks_raise():
    assert RunConfig().parallel.strategy == "none"
    assert RunConfig.from_dict({"parallel": {"strategy": "fsdp"}}).parallel.strategy == "fsdp"
    with pytest.raises(ConfigError, match="RunConfig.parallel.strategy"):
        RunConfig.from_dict({"parallel": {"strategy": "zero3"}})
    with pytest.raises(ConfigError, match="fsdp_param_dtype"):
        ParallelConfig(strategy="ddp", fsdp_param_dtype="bf16").validate()


def test_single_process_strategy_under_torchrun_raises(monkeypatch):
    assert init_distributed(ParallelConfig(), torch.device("cpu")) == (
        DistInfo(),
        torch.device("cpu"),
    )
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="parallel.strategy: ddp"):
        init_distributed(ParallelConfig(), torch.device("cpu"))
