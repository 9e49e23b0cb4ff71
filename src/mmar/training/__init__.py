"""mmar.training: the loop behind `mmar train`.

    from mmar.training import Trainer, load_preset
    summary = Trainer(load_preset("mnist_stage1", ["train.max_minutes=10"]), "runs/q").fit()

config.py     RunConfig {model, data, optim, train}, OptimConfig, TrainConfig, presets, --set
optim.py      AdamW parameter groups (no decay on norms/biases/embeddings), warmup + cosine
ema.py        EMA with warm-up decay min(d, (1 + s) / (10 + s))
batching.py   the collator: per-sample kinds and CFG dropout, the processor in DataLoader workers
data_order.py resumable per-epoch data order (batch sampler, stream position)
checkpoint.py atomic checkpoint directories, trainer_state save/load, RNG states
metrics.py    metrics.jsonl and loss.png
trainer.py    Trainer(run_cfg, out_dir, resume).fit() -> summary dict
"""

from typing import Any

_EXPORTS = {
    "RunConfig": "mmar.training.config",
    "OptimConfig": "mmar.training.config",
    "TrainConfig": "mmar.training.config",
    "KindMix": "mmar.training.config",
    "load_run_config": "mmar.training.config",
    "load_preset": "mmar.training.config",
    "preset_path": "mmar.training.config",
    "Trainer": "mmar.training.trainer",
    "TrainingDiverged": "mmar.training.trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(
    name: str,
) -> Any:  # lazy: importing the configs does not import the trainer's torch stack
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mmar.training' has no attribute {name!r}")
