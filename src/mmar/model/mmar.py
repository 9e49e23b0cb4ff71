"""MMAR: one causal LLM over text tokens and continuous image tokens (DESIGN.md §1-§3).

    images --tokenizer, patchify--> x (B, N, D) --[MASK] at masked positions--> EmbeddingViT
    --> LLM width at the image slots; text ids --LLM embedding--> elsewhere
    one backbone pass (bool 4-D mask: causal text, full image block) -> hidden (B, L, W)
    text slots: logits -> weighted cross-entropy
    masked image slots: z_i = hidden_i + pos_i --> DiffusionHead --> v-prediction loss
    L = CE_text + lambda_img * L_diff

Sampling lives in :mod:`mmar.generation`; this module holds the parts both use (embedding the
inputs, running the backbone, reading logits) plus training losses and persistence.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from mmar.diffusion.head import DiffusionHead
from mmar.diffusion.loss import diffusion_loss
from mmar.diffusion.schedule import NoiseSchedule
from mmar.model.backbone import build_backbone
from mmar.model.config import MMARConfig
from mmar.model.embedding_vit import EmbeddingViT
from mmar.model.masking import mask_from_orders, num_masked_from_ratio, random_orders, sample_mask_ratio
from mmar.model.sequence import PackedBatch, SpecialIds, pack_sequences
from mmar.tokenizers import build_image_tokenizer, build_text_tokenizer, patchify, unpatchify
from mmar.tokenizers.config import TextTokenizerConfig

TRAIN_KINDS = ("t2i", "i2t", "img", "text")
CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_DIR, BACKBONE_DIR = (
    "config.json", "model.safetensors", "tokenizer", "backbone")


class MMAR(nn.Module):
    """The MMAR model. ``text_tokenizer``: a PreTrainedTokenizerFast (built from
    ``config.text_tokenizer`` when None; the "words" kind needs one built from a corpus).
    ``backbone_config``: a transformers config to build the LLM from instead of its source
    (``from_pretrained`` uses it so that a checkpoint needs no original LLM weights)."""

    def __init__(self, config: MMARConfig, text_tokenizer=None, backbone_config=None):
        super().__init__()
        from mmar.tokenizers.text import add_image_tokens

        config.validate()
        self.config = config
        self.tokenizer = text_tokenizer or build_text_tokenizer(config.text_tokenizer)
        ids = add_image_tokens(self.tokenizer)  # idempotent
        self.special = SpecialIds(bos=ids.bos, eos=ids.eos, pad=ids.pad, boi=ids.boi, eoi=ids.eoi)
        self.image_tokenizer = build_image_tokenizer(config.image_tokenizer)
        self.geometry = config.image_tokenizer.geometry()
        self.backbone = build_backbone(config.backbone, len(self.tokenizer), backbone_config,
                                       new_token_ids=(ids.boi, ids.eoi))
        width = self.backbone.get_input_embeddings().weight.shape[1]  # peft: no embedding_dim
        g, n, d = self.geometry.latent_size // self.geometry.patch_size, self.geometry.num_tokens, \
            self.geometry.token_dim
        self.vit = EmbeddingViT(d, config.vit, n, (g, g), width)
        # [MASK] in token space (see embedding_vit.py); MAR's N(0, 0.02) init
        self.mask_token = nn.Parameter(torch.randn(d) * 0.02)
        self.diffusion_pos_emb = nn.Parameter(torch.randn(1, n, width) * 0.02)  # added to z
        dc = config.diffusion
        self.head = DiffusionHead(d, width, dc.head_width, dc.head_depth)
        self._schedule: NoiseSchedule | None = None

    # --- small accessors ------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.mask_token.device

    @property
    def num_image_tokens(self) -> int:
        return self.geometry.num_tokens

    def train(self, mode: bool = True) -> "MMAR":
        super().train(mode)
        self.image_tokenizer.eval()  # frozen: never in training mode
        return self

    def noise_schedule(self) -> NoiseSchedule:
        """The training process's float64 tables, on the model's device (rebuilt after .to())."""
        if self._schedule is None or self._schedule.device != self.device:
            self._schedule = NoiseSchedule(self.config.diffusion.num_timesteps, self.device)
        return self._schedule

    # --- inputs ---------------------------------------------------------------------------
    def encode_texts(self, texts: list[str]) -> list[list[int]]:
        """Token ids without specials, truncated to ``max_text_len``."""
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [x[: self.config.max_text_len] for x in ids]

    def pack(self, texts: list[str], kinds: list[str], padding_side: str = "right") -> PackedBatch:
        return pack_sequences(self.encode_texts(texts), kinds, self.num_image_tokens, self.special,
                              self.config.prompt_ce_weight, padding_side, self.device)

    def image_tokens(self, images: torch.Tensor | None = None, latents: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """images (B, C_img, H, W) in [-1, 1] or latents (B, C, h, w) -> tokens (B, N, D) float32."""
        if latents is None:
            if images is None:
                raise ValueError("MMAR: image samples need images (B, C, H, W) or latents")
            with torch.no_grad():
                latents = self.image_tokenizer.encode(images.to(self.device), generator=generator)
        return patchify(latents.to(self.device).float(), self.geometry.patch_size)

    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, N, D) -> images (B, C_img, H, W) in [-1, 1]."""
        h = self.geometry.latent_size
        return self.image_tokenizer.decode(unpatchify(tokens.float(), self.geometry.patch_size, h, h))

    def with_mask_token(self, tokens: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """tokens (B, N, D) with the [MASK] vector where masked (B, N) is True."""
        return torch.where(masked[..., None], self.mask_token.to(tokens.dtype), tokens)

    def embed(self, batch: PackedBatch, vit_inputs: torch.Tensor | None = None) -> torch.Tensor:
        """inputs_embeds (B, L, W): LLM embeddings of the ids, EmbeddingViT outputs at image slots.

        vit_inputs: (B_img, N, D), one row per sample that has an image, in batch order.
        """
        emb = self.backbone.get_input_embeddings()(batch.input_ids)               # (B, L, W)
        if vit_inputs is None:
            return emb
        img = self.vit(vit_inputs).to(emb.dtype)                                   # (B_img, N, W)
        # one block per sample, in sample order: row-major fill matches the slots
        return emb.masked_scatter(batch.is_image[..., None], img)

    def backbone_hidden(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                        position_ids: torch.Tensor, cache=None, use_cache: bool = False):
        """Last hidden states (B, L, W) of the backbone's decoder, and its KV cache (or None).

        cache: a transformers DynamicCache holding the keys/values of earlier positions; the
        4-D mask then spans (B, 1, L, cached + L). ``use_cache`` returns the updated cache.
        """
        out = self.backbone.get_decoder()(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                          position_ids=position_ids, cache=cache,
                                          use_cache=use_cache)
        return out.last_hidden_state, out.cache

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM logits of hidden states (..., W) -> (..., V); Qwen2/Llama: a plain lm_head."""
        return self.backbone.get_output_embeddings()(hidden)

    def text_logits(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Plain-LM logits of [bos] text [eos] through MMAR's path -> (B, L, V), valid (B, L)."""
        batch = self.pack(texts, ["text"] * len(texts))
        hidden, _ = self.backbone_hidden(self.embed(batch), batch.attention_mask, batch.position_ids)
        return self.logits(hidden), batch.valid

    def text_ce(self, hidden: torch.Tensor, batch: PackedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-target cross-entropy (T,) float32 and weights (T,) at the CE targets of the batch.

        Token j is predicted from position j - 1; logits are computed only where needed.
        """
        targets = batch.labels[:, 1:]                                              # (B, L-1)
        where = targets != -100
        logits = self.logits(hidden[:, :-1][where])                                # (T, V)
        ce = F.cross_entropy(logits.float(), targets[where], reduction="none")     # (T,)
        return ce, batch.label_weights[:, 1:][where]

    # --- training -------------------------------------------------------------------------
    def forward(self, images: torch.Tensor | None = None, texts: list[str] | None = None,
                kinds: list[str] | None = None, generator: torch.Generator | None = None,
                latents: torch.Tensor | None = None) -> dict:
        """Losses of a mixed batch; kinds[b] in {"t2i", "i2t", "img", "text"}.

        images (B, C_img, H, W) or latents (B, C, h, w): one row per sample (rows of "text"
        samples are ignored). CFG prompt dropout, mask ratios, orders and diffusion noise all
        come from ``generator`` (on the model's device).
        -> {"loss", "loss_text", "loss_diff" (0-d tensors with graph), "n_text_tokens" (CE
        targets), "text_weight" (sum of their CE weights), "n_masked" (masked image tokens)}
        """
        kinds = list(kinds or [])
        texts = list(texts) if texts is not None else [""] * len(kinds)
        bad = sorted(set(kinds) - set(TRAIN_KINDS))
        if not kinds or bad or len(texts) != len(kinds):
            raise ValueError(f"MMAR.forward: kinds must be a non-empty list over {list(TRAIN_KINDS)} "
                             f"with one text per sample; got kinds {kinds[:8]} and {len(texts)} texts")
        B, N, dev, cfg = len(kinds), self.num_image_tokens, self.device, self.config
        has_img = torch.tensor([k != "text" for k in kinds], device=dev)          # (B,)
        generative = torch.tensor([k in ("t2i", "img") for k in kinds], device=dev)
        drop = torch.rand(B, generator=generator, device=dev) < cfg.cfg_dropout    # (B,)
        texts = ["" if k == "t2i" and d else t for k, t, d in zip(kinds, texts, drop.tolist())]
        batch = self.pack(texts, kinds)

        ratio = sample_mask_ratio(B, cfg.mask, generator, dev)                      # (B,)
        orders = random_orders(B, N, generator, dev)                                # (B, N)
        masked = mask_from_orders(orders, num_masked_from_ratio(ratio, N)) & generative[:, None]
        vit_inputs = None
        if has_img.any():
            x = self.image_tokens(images, latents, generator)                       # (B, N, D)
            if x.shape[0] != B:
                raise ValueError(f"MMAR.forward: {B} samples but {x.shape[0]} images/latents")
            x, masked = x[has_img], masked[has_img]                                  # (B_img, ...)
            vit_inputs = self.with_mask_token(x, masked)
        hidden, _ = self.backbone_hidden(self.embed(batch, vit_inputs), batch.attention_mask,
                                         batch.position_ids)                        # (B, L, W)

        ce, w = self.text_ce(hidden, batch)                                         # (T,) x 2
        zero = hidden.new_zeros((), dtype=torch.float32)
        loss_text = (ce * w).sum() / w.sum() if w.sum() > 0 else zero
        loss_diff, n_masked = zero, 0
        if vit_inputs is not None and masked.any():
            z = hidden[batch.is_image].view(-1, N, hidden.shape[-1]) + self.diffusion_pos_emb
            z, x0 = z[masked], x[masked]                                            # (M, W), (M, D)
            mul, n_masked = cfg.diffusion.diffusion_batch_mul, x0.shape[0]
            rows = diffusion_loss(self.head, x0.repeat(mul, 1), z.float().repeat(mul, 1),
                                  self.noise_schedule(), cfg.diffusion.parameterization, generator)
            loss_diff = rows.mean()                                                 # over masked x mul
        loss = loss_text + cfg.lambda_img * loss_diff
        # the parts keep their graph: data-parallel training re-weights them across ranks
        return {"loss": loss, "loss_text": loss_text, "loss_diff": loss_diff,
                "n_text_tokens": int((w > 0).sum()), "text_weight": float(w.sum()),
                "n_masked": n_masked}

    @torch.no_grad()
    def text_nll(self, images: torch.Tensor, texts: list[str]) -> tuple[float, int]:
        """Sum of -log p(text, eos | image) in nats over the batch, and the number of tokens."""
        batch = self.pack(texts, ["i2t"] * len(texts))
        hidden, _ = self.backbone_hidden(self.embed(batch, self.image_tokens(images)),
                                         batch.attention_mask, batch.position_ids)
        ce, w = self.text_ce(hidden, batch)
        return float((ce * w).sum()), int((w > 0).sum())

    # --- sampling (see mmar.generation) ---------------------------------------------------
    def generate_images(self, prompts: list[str], **kwargs):
        """Text-to-image; see :func:`mmar.generation.image_generation.generate_images`."""
        from mmar.generation.image_generation import generate_images

        return generate_images(self, prompts, **kwargs)

    def caption(self, images, **kwargs) -> list[str]:
        """Image-to-text; see :func:`mmar.generation.captioning.caption`."""
        from mmar.generation.captioning import caption

        return caption(self, images, **kwargs)

    # --- persistence ----------------------------------------------------------------------
    def _canonical_names(self) -> dict[str, str]:
        """state-dict name -> the first name of the same tensor (tied weights share one entry)."""
        first: dict[int, str] = {}
        return {k: first.setdefault(id(v), k) for k, v in self.state_dict(keep_vars=True).items()}

    def _unique(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        names = self._canonical_names()
        return {k: v.detach().contiguous().cpu() for k, v in state.items() if names.get(k, k) == k}

    def save_pretrained(self, directory: str | Path, ema_state_dict: dict | None = None,
                        state_dict: dict | None = None) -> None:
        """Write config.json, model.safetensors (EMA under "ema."), tokenizer/, backbone/.

        state_dict: the weights to write instead of ``self.state_dict()`` (same names; e.g. the
        full tensors gathered from FSDP shards). safetensors refuses tensors sharing memory, so
        tied weights (e.g. lm_head = embedding) are stored once under their first name and
        re-tied by loading into the shared tensor.
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2))
        tensors = self._unique(self.state_dict() if state_dict is None else state_dict)
        if ema_state_dict is not None:
            # cloned: an EMA dict may share memory with the live weights, which safetensors refuses
            tensors.update({f"ema.{k}": v.clone() for k, v in self._unique(ema_state_dict).items()})
        save_file(tensors, str(d / WEIGHTS_FILE), metadata={"format": "pt"})
        self.tokenizer.save_pretrained(str(d / TOKENIZER_DIR))
        self.backbone.get_decoder().config.save_pretrained(str(d / BACKBONE_DIR))

    def _load_weights(self, state: dict[str, torch.Tensor], file: Path, partial: bool) -> None:
        expected = {k for k, c in self._canonical_names().items() if k == c}
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if unexpected or (missing and not partial):
            raise RuntimeError(f"MMAR.from_pretrained: {file} does not match the model built from "
                               f"{CONFIG_FILE}: missing keys {missing[:10]}, unexpected keys "
                               f"{unexpected[:10]} ({len(missing)} / {len(unexpected)} in all)")
        self.load_state_dict(state, strict=False)  # aliases of tied tensors load through the shared one

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: torch.device | str | None = None,
                        use_ema: bool = True) -> "MMAR":
        """Rebuild from a ``save_pretrained`` directory; EMA weights are used when present and
        ``use_ema`` (tensors the EMA does not hold, e.g. buffers, keep the raw weights)."""
        from transformers import AutoConfig

        from mmar.tokenizers.text import build_pretrained_tokenizer

        d = Path(directory)
        for f in (d / CONFIG_FILE, d / WEIGHTS_FILE, d / TOKENIZER_DIR, d / BACKBONE_DIR):
            if not f.exists():
                raise FileNotFoundError(f"MMAR.from_pretrained: {f} not found; expected a directory "
                                        "written by save_pretrained (config.json, model.safetensors, "
                                        "tokenizer/, backbone/), e.g. runs/quickstart")
        config = MMARConfig.from_json(d / CONFIG_FILE)
        config = config.replace(text_tokenizer=TextTokenizerConfig(kind="pretrained",
                                                                   path=str(d / TOKENIZER_DIR)))
        tok = build_pretrained_tokenizer(d / TOKENIZER_DIR)
        model = cls(config, tok, backbone_config=AutoConfig.from_pretrained(str(d / BACKBONE_DIR)))
        model.load_weights(d, use_ema=use_ema)
        return model.to(device) if device is not None else model

    def load_weights(self, directory: str | Path, use_ema: bool = True) -> None:
        """Load ``directory/model.safetensors`` (save_pretrained's) into this model, strictly.

        use_ema: then take the "ema." tensors where present (tensors the EMA does not hold, e.g.
        buffers and frozen weights, keep the raw ones). Used by from_pretrained and by the trainer
        (init_from, --resume)."""
        file = Path(directory) / WEIGHTS_FILE
        state = load_file(str(file))
        self._load_weights({k: v for k, v in state.items() if not k.startswith("ema.")},
                           file, partial=False)
        ema = {k[4:]: v for k, v in state.items() if k.startswith("ema.")}
        if use_ema and ema:
            self._load_weights(ema, file, partial=True)
