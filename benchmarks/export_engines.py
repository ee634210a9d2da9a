"""The engines a transformerkit model exports to, beside transformerkit itself, on the same
machine and threads, in one run (issue #21's measure, in tables shaped like CTranslate2's):

    python benchmarks/export_engines.py translation --model runs/en-de-…/model [--sentences 400] [--beam 4]
        [--length-penalty α] [--engines NAME …]
    python benchmarks/export_engines.py gpt2 [--prompt 16] [--new-tokens 64] [--batches 1 8] [--engines NAME …]

``translation``: the en→de test split at beam 4 (α: the model's, 0.6 for the demo's; each engine
applies it its own way, so α = 0 compares the searches themselves), batches of 32 — transformerkit fp32 (``translate``'s path: blocked weights where measured
faster), bf16 weights and int8 (``translate --dtype int8``: PyTorch's dynamic quantization);
CTranslate2 float32 and int8 (``export --format ctranslate2``, run by ``translate --backend
ctranslate2``'s translator); Hugging Face ``generate`` on the exported Marian/Pegasus model.
Reported: target tokens/s (tokens of our tokenizer in the outputs), sentences/s, BLEU, the share
of outputs identical to transformerkit fp32's, and the peak resident memory of the process.

``gpt2``: greedy decoding of the GPT-2 124M shape (random weights: speed does not depend on their
values; GPT-2's 50,257-token vocabulary), ``--new-tokens`` tokens after a ``--prompt``-token
prompt, at each batch size — transformerkit fp32 (``generate``'s path) and bf16 weights,
CTranslate2 float32 and int8, ONNX Runtime fp32 and int8 (``export --format onnx``, its KV-cache
graph), Hugging Face ``generate``. Reported: new tokens/s, the share of output tokens equal to
transformerkit fp32's, peak resident memory.

Each engine runs in a process of its own (its peak memory is its own; a warm-up first), one at a
time (each needs the whole machine), in ``--rounds`` interleaved rounds (A B C … A B C …): each
engine's best round is reported, so that a slow spell of a shared host does not land on one
engine. Run it alone.
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from transformerkit.backends.machine import describe  # noqa: E402

BATCH = 32
TRANSLATION_ENGINES = ["transformerkit fp32", "transformerkit bf16", "transformerkit int8", "CTranslate2 float32",
                       "CTranslate2 int8", "Hugging Face generate"]
GPT2_ENGINES = ["transformerkit fp32", "transformerkit bf16", "CTranslate2 float32", "CTranslate2 int8",
                "ONNX Runtime fp32", "ONNX Runtime int8", "Hugging Face generate"]


def peak_memory_mb() -> float:
    """This process's peak resident memory (Linux's VmHWM: unlike ``ru_maxrss`` it starts anew at
    ``exec``, so it does not include the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # elsewhere (KiB on Linux)


# --------------------------------------------------------------------------------------------- translation
def test_pairs(count: int) -> tuple[list[str], list[str]]:
    with gzip.open(ROOT / "data" / "gettext-en-de" / "test.tsv.gz", "rt", encoding="utf-8") as lines:
        pairs = [line.rstrip("\n").split("\t") for line in lines][:count]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def prepare_translation(model: Path, scratch: Path) -> None:
    """The exports the translation engines read, written once."""
    from transformerkit.checkpoint import load_model_dir
    from transformerkit.interop.ctranslate2 import save_ctranslate2
    from transformerkit.interop.seq2seq import save_hf_seq2seq

    ours, tokenizer, generation = load_model_dir(model)
    for quantize in ("float32", "int8"):
        save_ctranslate2(ours, scratch / quantize, tokenizer, generation, "translation", quantize)
    save_hf_seq2seq(ours, scratch / "hf", tokenizer, generation)


def translation_engine(name: str, model: Path, scratch: Path, beam: int, length_penalty: float | None
                       ) -> Callable[[list[str]], list[str]]:
    from transformerkit.checkpoint import load_model_dir
    from transformerkit.inference.translation import Translator, load_ctranslate2_translator, load_translator

    if name.startswith("CTranslate2"):
        return load_ctranslate2_translator(scratch / name.split()[1], beam, length_penalty).translate
    if name == "Hugging Face generate":
        import transformers

        hf_model = transformers.AutoModelForSeq2SeqLM.from_pretrained(scratch / "hf").eval()
        hf_tokenizer = transformers.AutoTokenizer.from_pretrained(scratch / "hf")
        if length_penalty is None:
            length_penalty = load_translator(model).generation.length_penalty

        def hugging_face(texts: list[str]) -> list[str]:
            batch = hf_tokenizer(texts, return_tensors="pt", padding=True)
            with torch.inference_mode():
                out = hf_model.generate(**batch, num_beams=beam, length_penalty=length_penalty, max_new_tokens=256)
            return hf_tokenizer.batch_decode(out, skip_special_tokens=True)
        return hugging_face
    if name.endswith("bf16"):  # weights in bfloat16, as generate --dtype bf16 casts them
        model_bf16, tokenizer, generation = load_model_dir(model)
        generation = replace(generation, beam=beam, length_penalty=generation.length_penalty if length_penalty is None
                             else length_penalty)
        return Translator(model_bf16.to(torch.bfloat16), tokenizer, generation).translate
    return load_translator(model, beam, length_penalty, dtype="int8" if name.endswith("int8") else "fp32").translate


def run_translation_engine(name: str, model: Path, scratch: Path, sentences: int, beam: int,
                           length_penalty: float | None) -> dict[str, Any]:
    import sacrebleu

    from transformerkit.data.tokenizer import SubwordTokenizer

    sources, references = test_pairs(sentences)
    translate = translation_engine(name, model, scratch, beam, length_penalty)
    translate(sources[:BATCH])  # warm-up
    started = time.perf_counter()
    outputs = [out for i in range(0, len(sources), BATCH) for out in translate(sources[i:i + BATCH])]
    seconds = time.perf_counter() - started
    tokens = sum(map(len, SubwordTokenizer.from_directory(model).encode(outputs)))
    return {"tokens/s": tokens / seconds, "sentences/s": len(outputs) / seconds, "outputs": outputs,
            "BLEU": sacrebleu.corpus_bleu(outputs, [references]).score, "peak MB": peak_memory_mb()}


# --------------------------------------------------------------------------------------------- GPT-2
def prepare_gpt2(scratch: Path) -> None:
    from transformerkit.checkpoint import save_model_dir
    from transformerkit.config import preset
    from transformerkit.data.tokenizer import SubwordTokenizer
    from transformerkit.generation.config import GenerationConfig
    from transformerkit.interop.ctranslate2 import save_ctranslate2
    from transformerkit.interop.gpt2 import save_hf_gpt2
    from transformerkit.interop.onnx import save_onnx
    from transformerkit.models.decoder_only import DecoderOnlyTransformer

    torch.manual_seed(0)
    model = DecoderOnlyTransformer(preset("gpt2", dropout=0.0, attention_dropout=0.0)).eval()
    tokenizer = SubwordTokenizer.from_directory(ROOT / "data" / "gpt2-tokenizer")
    generation = GenerationConfig(do_sample=False)
    save_model_dir(scratch / "model", model, tokenizer, generation, task="language-modeling")
    save_hf_gpt2(model, scratch / "hf", tokenizer)
    for quantize in ("float32", "int8"):
        save_ctranslate2(model, scratch / f"ct2-{quantize}", tokenizer, generation, "language-modeling", quantize)
    for quantize in ("float32", "int8"):
        save_onnx(model, scratch / f"onnx-{quantize}", tokenizer, generation, quantize)


def gpt2_engine(name: str, scratch: Path, new_tokens: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``name``'s greedy decoding: prompts (batch, prompt) ids → exactly ``new_tokens`` new ids each."""
    if name.startswith("transformerkit"):
        from transformerkit.backends.calibration import use_decoding_layout_where_faster
        from transformerkit.checkpoint import load_model_dir
        from transformerkit.generation.config import GenerationConfig
        from transformerkit.generation.decoders import CausalLMDecoder
        from transformerkit.generation.sampling import TokenChooser, generate_tokens

        model = load_model_dir(scratch / "model")[0]
        if name.endswith("bf16"):
            model.to(torch.bfloat16)
        use_decoding_layout_where_faster(model, rows=(1,))  # as load_generator does
        greedy = TokenChooser(GenerationConfig())

        def ours(prompt: torch.Tensor) -> torch.Tensor:
            decoder = CausalLMDecoder(model, torch.ones_like(prompt, dtype=torch.bool), prompt.shape[1] + new_tokens)
            with torch.inference_mode():
                return torch.stack(list(generate_tokens(decoder, prompt, new_tokens, greedy, None, 50256)), 1)
        return ours
    if name.startswith("CTranslate2"):
        import ctranslate2

        from transformerkit.data.tokenizer import SubwordTokenizer

        tokenizer = SubwordTokenizer.load(scratch / "ct2-float32" / "tokenizer.json")
        generator = ctranslate2.Generator(str(scratch / f"ct2-{name.split()[1]}"), intra_threads=torch.get_num_threads())

        def ct2(prompt: torch.Tensor) -> torch.Tensor:
            results = generator.generate_batch([tokenizer.tokens(row) for row in prompt.tolist()],
                                               max_length=new_tokens, min_length=new_tokens,
                                               include_prompt_in_result=False)
            return torch.tensor([r.sequences_ids[0] for r in results])
        return ct2
    if name.startswith("ONNX Runtime"):
        from transformerkit.interop.onnx import OnnxLanguageModel

        onnx_model = OnnxLanguageModel(scratch / f"onnx-{'int8' if name.endswith('int8') else 'float32'}",
                                       threads=torch.get_num_threads())
        return lambda prompt: onnx_model.greedy(prompt, torch.ones_like(prompt), new_tokens)
    from transformers import GPT2LMHeadModel

    theirs = GPT2LMHeadModel.from_pretrained(scratch / "hf").eval()

    def hugging_face(prompt: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = theirs.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                                  min_new_tokens=new_tokens, do_sample=False, pad_token_id=50256)
        return out[:, prompt.shape[1]:]
    return hugging_face


def gpt2_prompt(batch: int, length: int) -> torch.Tensor:
    return torch.randint(0, 50000, (batch, length), generator=torch.Generator().manual_seed(batch))


def run_gpt2_engine(name: str, scratch: Path, prompt_length: int, new_tokens: int, batches: list[int]
                    ) -> dict[str, Any]:
    decode = gpt2_engine(name, scratch, new_tokens)
    decode(gpt2_prompt(1, prompt_length))  # warm-up
    rates, outputs = {}, {}
    for batch in batches:
        prompt = gpt2_prompt(batch, prompt_length)
        started = time.perf_counter()
        tokens = decode(prompt)
        rates[batch] = batch * new_tokens / (time.perf_counter() - started)
        outputs[batch] = tokens.tolist()
    return {"tokens/s": rates, "outputs": outputs, "peak MB": peak_memory_mb()}


# --------------------------------------------------------------------------------------------- driver
def in_own_process(arguments: list[str]) -> dict[str, Any]:
    """This script with ``arguments`` in a new process: the JSON line it prints."""
    done = subprocess.run([sys.executable, __file__, *arguments], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(arguments)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def rounds_of(names: list[str], rounds: int, arguments: Callable[[str], list[str]]) -> dict[str, dict[str, Any]]:
    """Each engine's best run over ``rounds`` rounds, engines interleaved (A B C A B C …) so that
    a slow spell of a shared host does not land on one engine: its fastest rate(s) and its peak
    memory (the largest)."""
    best: dict[str, dict[str, Any]] = {}
    for _ in range(rounds):
        for name in names:
            row = in_own_process(arguments(name))
            if name not in best:
                best[name] = row
                continue
            kept = best[name]
            if isinstance(row["tokens/s"], dict):
                kept["tokens/s"] = {b: max(v, row["tokens/s"][b]) for b, v in kept["tokens/s"].items()}
            elif row["tokens/s"] > kept["tokens/s"]:
                kept["tokens/s"], kept["sentences/s"] = row["tokens/s"], row["sentences/s"]
            kept["peak MB"] = max(kept["peak MB"], row["peak MB"])
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", choices=["translation", "gpt2"])
    parser.add_argument("--model", type=Path, help="translation: a trained transformerkit translator")
    parser.add_argument("--sentences", type=int, default=400, help="translation: test sentences (default: 400)")
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--length-penalty", type=float, default=None, help="translation: α (default: the model's)")
    parser.add_argument("--engines", nargs="+", help="only these rows (default: all)")
    parser.add_argument("--prompt", type=int, default=16, help="gpt2: prompt tokens (default: 16)")
    parser.add_argument("--new-tokens", type=int, default=64, help="gpt2: new tokens per row (default: 64)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="gpt2: batch sizes (default: 1 8)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; each engine's best (default: 2)")
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # one engine, in a process of its own
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        result = (run_translation_engine(args.engine, args.model, args.scratch, args.sentences, args.beam,
                                         args.length_penalty)
                  if args.table == "translation" else
                  run_gpt2_engine(args.engine, args.scratch, args.prompt, args.new_tokens, args.batches))
        print(json.dumps(result))
        return
    if args.table == "translation" and args.model is None:
        parser.error("translation needs --model")
    scratch = Path(tempfile.mkdtemp())
    print(f"machine: {describe()}; {torch.get_num_threads()} threads")
    if args.table == "translation":
        prepare_translation(args.model, scratch)
        alpha = "the model's length penalty" if args.length_penalty is None else f"length penalty {args.length_penalty}"
        print(f"{args.sentences} en→de test sentences, beam {args.beam}, {alpha}, batches of {BATCH}\n")
        names = args.engines or TRANSLATION_ENGINES
        print(f"| engine | target tokens/s | sentences/s | BLEU | identical to {names[0]} | peak memory |")
        print("|---|---:|---:|---:|---:|---:|")
        rows = rounds_of(names, args.rounds, lambda name: [
            "translation", "--engine", name, "--model", str(args.model), "--scratch", str(scratch), "--sentences",
            str(args.sentences), "--beam", str(args.beam),
            *(["--length-penalty", str(args.length_penalty)] if args.length_penalty is not None else [])])
        reference = rows[names[0]]["outputs"]
        for name, row in rows.items():
            same = sum(a == b for a, b in zip(row["outputs"], reference))
            print(f"| {name} | {row['tokens/s']:,.0f} | {row['sentences/s']:.1f} | {row['BLEU']:.2f} | "
                  f"{same}/{len(reference)} | {row['peak MB']:,.0f} MB |", flush=True)
        return
    prepare_gpt2(scratch)
    print(f"GPT-2 124M shape, greedy, prompt {args.prompt} tokens, {args.new_tokens} new tokens\n")
    names = args.engines or GPT2_ENGINES
    print("| engine | " + " | ".join(f"batch {b}: tokens/s" for b in args.batches)
          + f" | tokens equal to {names[0]}'s | peak memory |")
    print("|---|" + "---:|" * (len(args.batches) + 2))
    rows = rounds_of(names, args.rounds, lambda name: [
        "gpt2", "--engine", name, "--scratch", str(scratch), "--prompt", str(args.prompt), "--new-tokens",
        str(args.new_tokens), "--batches", *map(str, args.batches)])
    first = rows[names[0]]["outputs"]
    total = sum(len(r) for batch in first for r in first[batch])
    for name, row in rows.items():
        equal = sum(a == b for batch in first for r, s in zip(first[batch], row["outputs"][batch])
                    for a, b in zip(r, s))
        rates = " | ".join(f"{row['tokens/s'][str(b)]:,.1f}" for b in args.batches)
        print(f"| {name} | {rates} | {equal / total:.1%} | {row['peak MB']:,.0f} MB |", flush=True)

if __name__ == "__main__":
    main()
