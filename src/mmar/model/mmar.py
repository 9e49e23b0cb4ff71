"""MMARModel: one causal LLM over text tokens and continuous image tokens (docs/method.md §1-§3).

    tokens x (B, N, D) --[MASK] at masked positions--> EmbeddingViT --> LLM width at the image
    slots; text ids --LLM embedding--> elsewhere
    one backbone pass (causal text, full image block: a bool 4-D mask, or a flex BlockMask)
        -> hidden (B, L, W)
    text slots: logits -> weighted cross-entropy
    masked image slots: z_i = hidden_i + pos_i --> DiffusionHead --> v-prediction loss
    L = CE_text + lambda_img * L_diff

The model takes packed batches and image tokens, never strings or pixels: ``MMARProcessor``
(processor.py) makes those, the pipelines (mmar.pipelines) own the sampling loops, and the
trainer wraps the model for data parallelism. This module holds the parts all of them use
(embedding the inputs, the backbone pass, logits, the conditions z), the training losses and
persistence of the weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import BlockMask

from mmar.diffusion.head import DiffusionHead
from mmar.diffusion.loss import diffusion_loss
from mmar.diffusion.schedule import NoiseSchedule
from mmar.model.backbone import build_backbone
from mmar.model.codebook_head import CodebookHead, codebook_loss
from mmar.model.config import MMARConfig
from mmar.model.embedding_vit import EmbeddingViT
from mmar.model.files import (
    BACKBONE_DIR,
    CONFIG_FILE,
    EMA_PREFIX,
    REQUIRED,
    TOKENIZER_DIR,
    WEIGHTS_FILE,
    missing_files,
    read_config,
)
from mmar.model.flex_attention import build_block_mask, full_block_mask, key_block_mask
from mmar.model.masking import mask_from_orders, mask_ratio, num_masked_from_ratio
from mmar.model.sequence import PackedBatch
from mmar.model.transfusion import TransfusionHead, transfusion_forward
from mmar.tokenizers.special import SpecialTokenIds
from mmar.torch_utils import read_safetensors, write_safetensors

Generators = torch.Generator | Sequence[torch.Generator | None] | None
"""Where training draws come from: one generator per sample (the trainer's: sample i draws from
generator i alone, so its draws do not depend on its batch, rank or world size), or one for the
whole batch (None: torch's default generator of the device)."""


def per_sample(generator: Generators, n: int) -> list[torch.Generator | None]:
    """``n`` generators, one per sample: the sequence given, or the one generator n times."""
    if generator is None or isinstance(generator, torch.Generator):
        return [generator] * n
    gens = list(generator)
    if len(gens) != n:
        raise ValueError(f"expected one generator per sample ({n}), got {len(gens)}")
    return gens


class MMARModel(nn.Module):
    """The MMAR network: backbone LLM, EmbeddingViT, [MASK] vector, diffusion head
    (``config.image_head`` "transfusion": ``self.transfusion``, a timestep embedder and a linear
    output, instead of the head; see mmar.model.transfusion).

    vocab_size: the text vocabulary with <boi>/<eoi> (``processor.vocab_size``); the LLM's
      embedding is grown to it. special: the structural token ids (``processor.special``):
      <boi>/<eoi> stay trainable in the frozen and LoRA backbone modes.
    backbone_config: a transformers config to build the LLM from instead of its source
      (``from_pretrained`` uses it so that a checkpoint needs no original LLM weights).
    """

    def __init__(
        self,
        config: MMARConfig,
        vocab_size: int,
        special: SpecialTokenIds,
        backbone_config: Any = None,
    ):
        super().__init__()
        config.validate()
        self.config = config
        self.special = special
        self.geometry = config.image_tokenizer.geometry()
        self.backbone = build_backbone(
            config.backbone, vocab_size, backbone_config, new_token_ids=(special.boi, special.eoi)
        )
        embedding = cast(torch.Tensor, self.backbone.get_input_embeddings().weight)
        width = embedding.shape[1]  # peft's wrapped embedding has no embedding_dim
        g, n, d = (
            self.geometry.grid,
            self.geometry.num_tokens,
            self.geometry.token_dim,
        )
        self.vit = EmbeddingViT(d, config.vit, n, (g, g), width)
        # [MASK] in token space (see embedding_vit.py); MAR's N(0, 0.02) init
        self.mask_token = nn.Parameter(torch.randn(d) * 0.02)
        self.diffusion_pos_emb = nn.Parameter(torch.randn(1, n, width) * 0.02)  # added to z
        dc = config.diffusion
        self.head: DiffusionHead | None = None
        self.code_head: CodebookHead | None = None  # image_head "codebook": codebook_head.py
        if config.image_head == "transfusion":  # diffusion inside the backbone: transfusion.py
            self.transfusion = TransfusionHead(width, d)
        elif config.image_head == "codebook":
            self.code_head = CodebookHead(width, cast(int, self.geometry.codebook_size), d)
        else:
            self.head = DiffusionHead(d, width, dc.head_width, dc.head_depth)
        self._schedule: NoiseSchedule | None = None

    # --- small accessors ------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.mask_token.device

    @property
    def num_image_tokens(self) -> int:
        return self.geometry.num_tokens

    def noise_schedule(self) -> NoiseSchedule:
        """The training process's float64 tables, on the model's device (rebuilt after .to())."""
        if self._schedule is None or self._schedule.device != self.device:
            self._schedule = NoiseSchedule(self.config.diffusion.num_timesteps, self.device)
        return self._schedule

    # --- the network's parts ----------------------------------------------------------------
    def with_mask_token(self, tokens: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """tokens (B, N, D) with the [MASK] vector where masked (B, N) is True."""
        return torch.where(masked[..., None], self.mask_token.to(tokens.dtype), tokens)

    def image_embeddings(
        self, tokens: torch.Tensor, timesteps: torch.Tensor | None = None
    ) -> torch.Tensor:
        """What the LLM reads at the image slots: EmbeddingViT(tokens) (B_img, N, W).

        ``image_head == "transfusion"``: plus the embedding of each image's diffusion timestep,
        timesteps (B_img,) long; None = t = 0 for all, a clean image (understanding reads it so).
        Other heads take no timestep (None)."""
        img = self.vit(tokens)  # (B_img, N, W)
        if self.config.image_head != "transfusion":
            return img
        if timesteps is None:
            timesteps = torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
        return img + self.transfusion.time_embedding(timesteps).to(img.dtype)

    def embed(
        self,
        batch: PackedBatch,
        vit_inputs: torch.Tensor | None = None,
        timesteps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """inputs_embeds (B, L, W): LLM embeddings of the ids, ``image_embeddings`` at image slots.

        vit_inputs: (B_img, N, D), one row per sample that has an image, in batch order.
        timesteps: (B_img,) of a transfusion model's noised images (see ``image_embeddings``).
        """
        emb = self.backbone.get_input_embeddings()(batch.input_ids)  # (B, L, W)
        if vit_inputs is None:
            return emb
        img = self.image_embeddings(vit_inputs, timesteps).to(emb.dtype)  # (B_img, N, W)
        # one block per sample, in sample order: row-major fill matches the slots
        return emb.masked_scatter(batch.is_image[..., None], img)

    def attention_mask(
        self, batch: PackedBatch, start: int = 0, end: int | None = None
    ) -> torch.Tensor | BlockMask:
        """The backbone's mask of queries start..end-1 over keys 0..end-1 of a packed batch.

        ``config.backbone.attention`` "dense": the bool (B, 1, Q, K) slice of
        ``batch.attention_mask`` (the whole tensor for the defaults); "flex": a BlockMask of the
        same rule built on the batch's device (flex_attention.py). The KV-cached pipeline asks
        for its prefix (0, P) and its image block (P, None).
        """
        if self.config.backbone.attention == "dense":
            if start == 0 and end is None:
                return batch.attention_mask
            return batch.attention_mask[:, :, start:end, :end]
        return build_block_mask(batch.block_ids[:, :end], batch.valid[:, :end], start)

    def decoding_mask(
        self, batch_size: int, kv_len: int, key_valid: torch.Tensor | None = None
    ) -> torch.Tensor | BlockMask:
        """The mask of one new query per sample that sees all ``kv_len`` keys (KV-cached text
        decoding): bool ones (B, 1, 1, kv_len), or the equivalent BlockMask.

        key_valid: (B, kv_len) bool, False at the keys no query may see (the left padding of
        a batch of answering prefixes); None = every key."""
        if key_valid is not None:
            if self.config.backbone.attention == "dense":
                return key_valid[:, None, None, :].to(self.device)  # (B, 1, 1, kv_len)
            return key_block_mask(key_valid.to(self.device))
        if self.config.backbone.attention == "dense":
            return torch.ones(batch_size, 1, 1, kv_len, dtype=torch.bool, device=self.device)
        return full_block_mask(batch_size, 1, kv_len, self.device)

    def backbone_hidden(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | BlockMask,
        position_ids: torch.Tensor,
        cache: Any = None,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, Any]:
        """Last hidden states (B, L, W) of the backbone's decoder, and its KV cache (or None).

        attention_mask: ``self.attention_mask(...)`` / ``decoding_mask``: the form the backbone's
        attention takes (a bool 4-D tensor for dense, a BlockMask for flex).
        cache: a transformers DynamicCache holding the keys/values of earlier positions; the
        4-D mask then spans (B, 1, L, cached + L). ``use_cache`` returns the updated cache.
        """
        out = self.backbone.get_decoder()(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
        )
        return out.last_hidden_state, out.cache

    def hidden_states(
        self,
        batch: PackedBatch,
        vit_inputs: torch.Tensor | None = None,
        timesteps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One backbone pass over a packed batch -> last hidden states (B, L, W)."""
        hidden, _ = self.backbone_hidden(
            self.embed(batch, vit_inputs, timesteps),
            self.attention_mask(batch),
            batch.position_ids,
        )
        return hidden

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM logits of hidden states (..., W) -> (..., V); Qwen2/Llama: a plain lm_head."""
        return self.backbone.get_output_embeddings()(hidden)

    def conditions(self, hidden: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
        """The diffusion head's conditions z = hidden + pos at the image slots -> (B_img, N, W)."""
        z = hidden[batch.is_image].view(-1, self.num_image_tokens, hidden.shape[-1])
        return z + self.diffusion_pos_emb

    def text_ce(
        self, hidden: torch.Tensor, batch: PackedBatch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-target cross-entropy (T,) float32 and weights (T,) at the CE targets of the batch.

        Token j is predicted from position j - 1; logits are computed only where needed.
        """
        targets = batch.labels[:, 1:]  # (B, L-1)
        where = targets != -100
        logits = self.logits(hidden[:, :-1][where])  # (T, V)
        ce = F.cross_entropy(logits.float(), targets[where], reduction="none")  # (T,)
        return ce, batch.label_weights[:, 1:][where]

    # --- training -------------------------------------------------------------------------
    def draw_mask(self, batch: PackedBatch, generator: Generators = None) -> torch.Tensor:
        """Masked image positions (B, N) bool: a mask ratio and a random order per sample (MAR's
        recipe, ``config.mask``), only in the rows whose image is generated (t2i, img).

        generator: see :data:`Generators`; sample i draws N + 1 uniforms from its generator in
        one call: the first gives its ratio, the argsort of the others its order."""
        B, N, dev = len(batch), self.num_image_tokens, self.device
        u = torch.stack(
            [
                torch.rand(N + 1, generator=g, device=dev, dtype=torch.float64)
                for g in per_sample(generator, B)
            ]
        )  # (B, N + 1)
        ratio, orders = mask_ratio(u[:, 0], self.config.mask), u[:, 1:].argsort(1)
        return mask_from_orders(orders, num_masked_from_ratio(ratio, N)) & batch.generative[:, None]

    def draw_diffusion_noise(
        self, masked: torch.Tensor, generator: Generators = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The diffusion loss's timesteps t (mul M,) long and noise (mul M, D) for the masked
        tokens of masked (B_img, N), M = masked.sum(), mul = ``diffusion_batch_mul``.

        Row r * M + j is repetition r of masked token j (row-major over (sample, position)), as
        ``tokens[masked].repeat(mul, 1)``. Sample i draws t (mul, m_i), then noise (mul, m_i, D)
        from its generator (:data:`Generators`, one per row of ``masked``)."""
        mul, T = self.config.diffusion.diffusion_batch_mul, self.config.diffusion.num_timesteps
        D, dev = self.geometry.token_dim, self.device
        ts = [torch.empty(mul, 0, dtype=torch.long, device=dev)]
        noise = [torch.empty(mul, 0, D, device=dev)]
        for g, m in zip(per_sample(generator, len(masked)), masked.sum(1).tolist(), strict=True):
            if m:
                ts.append(torch.randint(0, T, (mul, m), generator=g, device=dev))
                noise.append(torch.randn(mul, m, D, generator=g, device=dev))
        return torch.cat(ts, 1).reshape(-1), torch.cat(noise, 1).reshape(-1, D)

    def forward(
        self,
        batch: PackedBatch,
        tokens: torch.Tensor | None = None,
        generator: Generators = None,
    ) -> dict[str, Any]:
        """Losses of a packed batch of t2i / i2t / img / text samples.

        tokens: (B_img, N, D) float, the image tokens of the samples that have an image, in
        batch order (``processor.encode_images``). Masks (drawn first, see ``draw_mask``) and the
        diffusion timesteps and noise (``draw_diffusion_noise``) come from ``generator`` (on the
        model's device): one per sample (B) makes every sample's loss a function of its own
        draws, whatever batch or rank it is in (the trainer's), or one for the batch.
        -> {"loss", "loss_text", "loss_diff" (0-d tensors with graph), "n_text_tokens" (CE
        targets), "text_weight" (sum of their CE weights), "n_masked" (masked image tokens)}

        ``loss_diff`` is the image loss of every ``config.image_head``, under one name so that the
        trainer and its logs need not know the head: the diffusion loss ("diffusion"), the
        cross-entropy of the masked tokens' codes, mean over them ("codebook", codebook_head.py),
        or the whole-image diffusion MSE ("transfusion": no masking; ``n_masked`` = its noised
        tokens, N per generated image; :func:`mmar.model.transfusion.transfusion_forward`).
        """
        # fmt: off
        cfg = self.config
        gens = per_sample(generator, len(batch))
        if cfg.image_head == "transfusion":
            return transfusion_forward(self, batch, tokens, gens)
        masked = self.draw_mask(batch, gens)                                        # (B, N)
        n_img = self.check_image_tokens(batch, tokens)
        vit_inputs = None
        if n_img and tokens is not None:
            masked = masked[batch.has_image]                                        # (B_img, N)
            gens = [g for g, has in zip(gens, batch.has_image.tolist()) if has]     # (B_img,)
            vit_inputs = self.with_mask_token(tokens, masked)
        hidden = self.hidden_states(batch, vit_inputs)                              # (B, L, W)

        loss_text, w = self.text_loss(hidden, batch)
        loss_diff, n_masked = hidden.new_zeros((), dtype=torch.float32), 0
        if tokens is not None and vit_inputs is not None and masked.any() and self.code_head:
            z, x0 = self.conditions(hidden, batch)[masked], tokens[masked]          # (M, W), (M, D)
            loss_diff, n_masked = codebook_loss(self.code_head, z, x0), x0.shape[0]  # CE of codes
        elif tokens is not None and vit_inputs is not None and masked.any():
            z, x0 = self.conditions(hidden, batch)[masked], tokens[masked]          # (M, W), (M, D)
            mul, n_masked = cfg.diffusion.diffusion_batch_mul, x0.shape[0]
            t, noise = self.draw_diffusion_noise(masked, gens)                      # (mul M,)
            head = cast(DiffusionHead, self.head)                                  # "diffusion"
            rows = diffusion_loss(head, x0.float().repeat(mul, 1), z.float().repeat(mul, 1),
                                  self.noise_schedule(), cfg.diffusion.parameterization,
                                  t=t, noise=noise)
            loss_diff = rows.mean()                                          # over masked x mul
        return self.losses(loss_text, loss_diff, w, n_masked)
        # fmt: on

    def check_image_tokens(self, batch: PackedBatch, tokens: torch.Tensor | None) -> int:
        """The number of image samples of ``batch``, B_img, after checking that ``tokens`` is
        (B_img, N, D) (ValueError naming the expected shape otherwise)."""
        n_img = int(batch.has_image.sum())
        expected = (n_img, self.num_image_tokens, self.geometry.token_dim)
        if n_img and (tokens is None or tuple(tokens.shape) != expected):
            got = None if tokens is None else tuple(tokens.shape)
            raise ValueError(
                f"MMARModel.forward: the batch has {n_img} image samples, so tokens must be "
                f"{expected} (processor.encode_images), got {got}"
            )
        return n_img

    def text_loss(
        self, hidden: torch.Tensor, batch: PackedBatch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """CE_text: the weighted mean of ``text_ce`` (0 when nothing is weighted), and the CE
        weights (T,)."""
        ce, w = self.text_ce(hidden, batch)  # (T,) x 2
        zero = hidden.new_zeros((), dtype=torch.float32)
        return ((ce * w).sum() / w.sum() if w.sum() > 0 else zero), w

    def losses(
        self, loss_text: torch.Tensor, loss_diff: torch.Tensor, w: torch.Tensor, n_masked: int
    ) -> dict[str, Any]:
        """The dict ``forward`` returns: L = CE_text + lambda_img * loss_diff, and its parts
        (which keep their graph: data-parallel training re-weights them across ranks)."""
        loss = loss_text + self.config.lambda_img * loss_diff
        return {
            "loss": loss,
            "loss_text": loss_text,
            "loss_diff": loss_diff,
            "n_text_tokens": int((w > 0).sum()),
            "text_weight": float(w.sum()),
            "n_masked": n_masked,
        }

    # --- persistence ----------------------------------------------------------------------
    def _canonical_names(self) -> dict[str, str]:
        """state-dict name -> the first name of the same tensor (tied weights share one entry)."""
        first: dict[int, str] = {}
        return {k: first.setdefault(id(v), k) for k, v in self.state_dict(keep_vars=True).items()}

    def _unique(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        names = self._canonical_names()
        return {k: v.detach().contiguous().cpu() for k, v in state.items() if names.get(k, k) == k}

    def save_pretrained(
        self,
        directory: str | Path,
        ema_state_dict: dict | None = None,
        state_dict: dict | None = None,
        config: MMARConfig | None = None,
    ) -> None:
        """Write config.json, model.safetensors (EMA under "ema.") and backbone/ (the processor
        writes tokenizer/ beside them: ``MMARProcessor.save_pretrained``).

        state_dict: the weights to write instead of ``self.state_dict()`` (same names; e.g. the
        full tensors gathered from FSDP shards). config: the config to record instead of
        ``self.config`` (``MMAR.save_pretrained``: the one naming the checkpoint's own tokenizer,
        ``mmar.model.files.self_contained``). safetensors refuses tensors sharing memory, so
        tied weights (e.g. lm_head = embedding) are stored once under their first name and
        re-tied by loading into the shared tensor.
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (self.config if config is None else config).to_json(d / CONFIG_FILE)  # + mmar version
        tensors = self._unique(self.state_dict() if state_dict is None else state_dict)
        if ema_state_dict is not None:
            # cloned: an EMA dict may share memory with the live weights, which safetensors refuses
            tensors.update(
                {EMA_PREFIX + k: v.clone() for k, v in self._unique(ema_state_dict).items()}
            )
        write_safetensors(tensors, d / WEIGHTS_FILE, metadata={"format": "pt"})
        self.backbone.get_decoder().config.save_pretrained(str(d / BACKBONE_DIR))

    def _load_weights(self, state: dict[str, torch.Tensor], file: Path, partial: bool) -> None:
        expected = {k for k, c in self._canonical_names().items() if k == c}
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if unexpected or (missing and not partial):
            raise RuntimeError(
                f"MMARModel: {file} does not match the model built from "
                f"{CONFIG_FILE}: missing keys {missing[:10]}, unexpected keys "
                f"{unexpected[:10]} ({len(missing)} / {len(unexpected)} in all)"
            )
        self.load_state_dict(
            state, strict=False
        )  # aliases of tied tensors load through the shared one

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        special: SpecialTokenIds,
        device: torch.device | str | None = None,
        use_ema: bool = True,
    ) -> MMARModel:
        """Rebuild from a ``save_pretrained`` directory; EMA weights are used when present and
        ``use_ema`` (tensors the EMA does not hold, e.g. buffers, keep the raw weights).

        special: the token ids of the directory's processor (``MMARProcessor.from_pretrained(
        directory).special``); ``mmar.MMAR.from_pretrained`` loads both."""
        from transformers import AutoConfig

        d = Path(directory)
        # tokenizer/ is the processor's to read
        missing = [f for f in missing_files(d) if f != TOKENIZER_DIR + "/"]
        if missing:
            raise FileNotFoundError(
                f"MMARModel.from_pretrained: {d}: missing {', '.join(missing)}; expected a "
                f"directory written by save_pretrained ({', '.join(REQUIRED)}), e.g. "
                "runs/quickstart"
            )
        config = read_config(d)
        backbone_config = AutoConfig.from_pretrained(str(d / BACKBONE_DIR))
        model = cls(config, backbone_config.vocab_size, special, backbone_config=backbone_config)
        model.load_weights(d, use_ema=use_ema)
        return model.to(device) if device is not None else model

    def load_weights(self, directory: str | Path, use_ema: bool = True) -> None:
        """Load ``directory/model.safetensors`` (save_pretrained's) into this model, strictly.

        use_ema: then take the "ema." tensors where present (tensors the EMA does not hold, e.g.
        buffers and frozen weights, keep the raw ones). Used by from_pretrained and by the trainer
        (init_from, --resume)."""
        file = Path(directory) / WEIGHTS_FILE
        state = read_safetensors(file)  # names the file if it is truncated or corrupt
        self._load_weights(
            {k: v for k, v in state.items() if not k.startswith(EMA_PREFIX)}, file, partial=False
        )
        ema = {k[len(EMA_PREFIX) :]: v for k, v in state.items() if k.startswith(EMA_PREFIX)}
        if use_ema and ema:
            self._load_weights(ema, file, partial=True)
