"""Translation of the en→de test split by the engines a transformerkit translator exports to,
beside transformerkit itself, in one run on the same machine and threads:

    python benchmarks/export_engines.py --model runs/en-de-…/model [--sentences 400] [--beam 4]

Rows: transformerkit fp32 (``translate``'s path: blocked weights where measured faster),
CTranslate2 float32 and int8 (``export --format
ctranslate2``), Hugging Face ``generate`` on the exported Marian/Pegasus model (``export --format
hf``). Each translates the same sentences, in batches of 32, at the same beam size and length
penalty (α = 0.6 by default: each engine applies it its own way); reported: target tokens/s
(tokens of our tokenizer in the outputs), BLEU (sacreBLEU) and the share of outputs identical to
transformerkit fp32's. Engines run one after the other (a warm-up batch first), not interleaved:
each needs the whole machine.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import sacrebleu
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from transformerkit.backends.machine import describe  # noqa: E402
from transformerkit.inference.translation import Translator, load_ctranslate2_translator, load_translator  # noqa: E402
from transformerkit.interop.ctranslate2 import save_ctranslate2  # noqa: E402
from transformerkit.interop.seq2seq import save_hf_seq2seq  # noqa: E402

BATCH = 32


def batches(items: list[str]) -> list[list[str]]:
    return [items[i:i + BATCH] for i in range(0, len(items), BATCH)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="a trained transformerkit translator")
    parser.add_argument("--sentences", type=int, default=400, help="test sentences translated (default: 400)")
    parser.add_argument("--beam", type=int, default=4)
    args = parser.parse_args()
    base = load_translator(args.model)
    generation = replace(base.generation, beam=args.beam)
    with gzip.open(ROOT / "data" / "gettext-en-de" / "test.tsv.gz", "rt", encoding="utf-8") as lines:
        pairs = [line.rstrip("\n").split("\t") for line in lines][:args.sentences]
    sources, references = [p[0] for p in pairs], [p[1] for p in pairs]
    engines: dict[str, Callable[[list[str]], list[str]]] = {}
    ours = Translator(base.model, base.tokenizer, generation)
    engines["transformerkit fp32"] = ours.translate

    scratch = Path(tempfile.mkdtemp())
    import transformers
    for quantize in ("float32", "int8"):  # through translate --backend ctranslate2's own translator
        save_ctranslate2(base.model, scratch / quantize, base.tokenizer, base.generation, quantize)
        engines[f"CTranslate2 {quantize}"] = load_ctranslate2_translator(scratch / quantize, beam=args.beam).translate
    save_hf_seq2seq(base.model, scratch / "hf", base.tokenizer, base.generation)
    hf_model = transformers.AutoModelForSeq2SeqLM.from_pretrained(scratch / "hf").eval()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(scratch / "hf")

    def hugging_face(texts: list[str]) -> list[str]:
        batch = hf_tokenizer(texts, return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = hf_model.generate(**batch, num_beams=args.beam, length_penalty=generation.length_penalty,
                                    max_new_tokens=256)
        return hf_tokenizer.batch_decode(out, skip_special_tokens=True)
    engines[f"Hugging Face generate ({type(hf_model).__name__})"] = hugging_face

    print(f"machine: {describe()}")
    print(f"{len(sources)} en→de test sentences, beam {args.beam}, length penalty {generation.length_penalty}, "
          f"batches of {BATCH}\n")
    print("| engine | target tokens/s | sentences/s | BLEU | identical to transformerkit fp32 |")
    print("|---|---:|---:|---:|---:|")
    reference_outputs: list[str] = []
    for name, translate in engines.items():
        translate(sources[:BATCH])  # warm-up
        started = time.perf_counter()
        outputs = [out for chunk in batches(sources) for out in translate(chunk)]
        seconds = time.perf_counter() - started
        reference_outputs = reference_outputs or outputs
        tokens = sum(len(ids) for ids in base.tokenizer.encode(outputs))
        same = sum(a == b for a, b in zip(outputs, reference_outputs))
        print(f"| {name} | {tokens / seconds:,.0f} | {len(outputs) / seconds:.1f} | "
              f"{sacrebleu.corpus_bleu(outputs, [references]).score:.2f} | {same}/{len(outputs)} |", flush=True)


if __name__ == "__main__":
    main()
