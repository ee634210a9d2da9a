"""The decoder-only model and text generation: cache, left padding, sampling semantics, stop strings."""

import pytest
import torch
from transformers.generation.logits_process import (RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                                                    TopKLogitsWarper, TopPLogitsWarper)

from transformerkit.config import preset
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.generation.config import GenerationConfig
from transformerkit.generation.sampling import TokenChooser, apply_repetition_penalty, top_k_filter, top_p_filter
from transformerkit.inference.language_modeling import TextGenerator
from transformerkit.models.decoder_only import DecoderOnlyTransformer

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 3


def tiny_lm(**changes: object) -> tuple[DecoderOnlyTransformer, SubwordTokenizer]:
    tokenizer = SubwordTokenizer.train_characters([TEXT])
    torch.manual_seed(0)
    config = preset("gpt-tiny", vocab_size=tokenizer.vocab_size, dropout=0.0, attention_dropout=0.0, **changes)
    return DecoderOnlyTransformer(config).eval(), tokenizer


def left_padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[False] * (width - len(r)) + [True] * len(r) for r in rows])
    return ids, mask


@pytest.mark.parametrize("positional", ["learned", "sinusoidal", "rotary"])
def test_cached_decoding_equals_uncached(positional: str) -> None:
    model, _ = tiny_lm(positional=positional)
    ids, mask = left_padded([[5, 6, 7, 8, 9, 10, 11, 12], [7, 8, 9]], pad=0)
    full = model(ids, attention_mask=mask)
    cache = model.new_cache(ids.shape[1])
    prompt = 3
    pieces = [model(ids[:, :prompt], attention_mask=mask[:, :prompt], cache=cache)]
    for t in range(prompt, ids.shape[1]):
        pieces.append(model(ids[:, t:t + 1], attention_mask=mask[:, :t + 1], cache=cache))
    cached = torch.cat(pieces, dim=1)
    assert torch.allclose(cached[mask], full[mask], atol=1e-5)


@pytest.mark.parametrize("kernel", ["fused", "reference"])
def test_left_padding_does_not_change_a_prompts_logits(kernel: str) -> None:
    model, _ = tiny_lm(attention_kernel=kernel)
    alone = model(torch.tensor([[7, 8, 9]]))
    ids, mask = left_padded([[5, 6, 7, 8, 9, 10, 11, 12], [7, 8, 9]], pad=0)
    batched = model(ids, attention_mask=mask)
    assert torch.allclose(batched[1, -3:], alone[0], atol=1e-5)


def test_a_prompts_generation_does_not_depend_on_its_batch() -> None:
    model, tokenizer = tiny_lm()
    for config in (GenerationConfig(max_new_tokens=12), GenerationConfig(max_new_tokens=12, repetition_penalty=1.5)):
        generator = TextGenerator(model, tokenizer, config)
        alone = generator.generate(["the"])
        together = generator.generate(["Whether 'tis nobler in", "the"])
        assert together[1] == alone[0] and len(alone[0]) == 12


def test_mask_of_the_wrong_shape_is_an_error() -> None:
    model, _ = tiny_lm()
    with pytest.raises(ValueError, match="attention_mask must be"):
        model(torch.tensor([[5, 6, 7]]), attention_mask=torch.ones(1, 4, dtype=torch.bool))


def test_decoder_only_config_errors() -> None:
    with pytest.raises(ValueError, match="num_encoder_layers = 0"):
        DecoderOnlyTransformer(preset("tiny"))
    with pytest.raises(ValueError, match="needs num_encoder_layers > 0"):
        from transformerkit.models.encoder_decoder import EncoderDecoderTransformer
        EncoderDecoderTransformer(preset("gpt-tiny"))


@pytest.mark.parametrize("name, parameters", [
    ("gpt2", 124_439_808), ("gpt2-medium", 354_823_168), ("gpt2-large", 774_030_080), ("gpt2-xl", 1_557_611_200)])
def test_gpt2_presets_have_gpt2s_parameter_counts(name: str, parameters: int) -> None:
    """The counts of Hugging Face's GPT2LMHeadModel for gpt2, -medium, -large, -xl (embeddings tied)."""
    with torch.device("meta"):
        counts = DecoderOnlyTransformer(preset(name)).parameter_counts()
    assert counts["total"] == parameters
    assert counts["output_projection"] == 0


# ------------------------------------------------------------------------------ logits processors
@pytest.fixture
def logits() -> torch.Tensor:
    return torch.randn(4, 50, generator=torch.Generator().manual_seed(0)) * 3


def test_repetition_penalty_matches_transformers(logits: torch.Tensor) -> None:
    history = torch.tensor([[1, 2, 3], [4, 4, 5], [0, 9, 49], [7, 8, 9]])
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(1, history, True)
    expected = RepetitionPenaltyLogitsProcessor(1.3)(history, logits.clone())
    assert torch.allclose(apply_repetition_penalty(logits, seen, 1.3), expected)


@pytest.mark.parametrize("k", [1, 5, 49])
def test_top_k_matches_transformers(logits: torch.Tensor, k: int) -> None:
    expected = TopKLogitsWarper(k)(None, logits.clone())
    assert torch.equal(top_k_filter(logits, k), expected)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 0.99])
def test_top_p_matches_transformers(logits: torch.Tensor, p: float) -> None:
    expected = TopPLogitsWarper(p)(None, logits.clone())
    assert torch.equal(top_p_filter(logits, p).isinf(), expected.isinf())


def test_sampling_is_seeded_and_follows_the_filters(logits: torch.Tensor) -> None:
    config = GenerationConfig(do_sample=True, seed=7, temperature=0.7, top_k=3)
    draws = torch.stack([TokenChooser(config)(logits) for _ in range(3)])
    assert torch.equal(draws[0], draws[1]) and torch.equal(draws[1], draws[2])  # same seed, same tokens
    chooser = TokenChooser(config)
    allowed = TemperatureLogitsWarper(0.7)(None, TopKLogitsWarper(3)(None, logits.clone())).isfinite()
    for _ in range(50):
        tokens = chooser(logits)
        assert allowed.gather(1, tokens[:, None]).all()
    greedy = TokenChooser(GenerationConfig(do_sample=True, seed=1, top_k=1))(logits)
    assert torch.equal(greedy, logits.argmax(-1))


def test_stop_strings_cut_and_end_the_text() -> None:
    model, tokenizer = tiny_lm()
    free = TextGenerator(model, tokenizer, GenerationConfig(max_new_tokens=30)).generate(["the"])[0]
    stop = free[3:5]
    cut = TextGenerator(model, tokenizer, GenerationConfig(max_new_tokens=30, stop=[stop])).generate(["the"])[0]
    assert cut == free[:free.index(stop)]


def test_invalid_generation_settings_name_the_setting() -> None:
    for changes, name in (({"temperature": 0.0}, "temperature"), ({"top_p": 0.0}, "top_p"),
                          ({"top_k": -1}, "top_k"), ({"max_new_tokens": 0}, "max_new_tokens")):
        with pytest.raises(ValueError, match=name):
            TokenChooser(GenerationConfig(**changes))


def test_generation_with_and_without_the_cache_agrees() -> None:
    from transformerkit.generation.decoders import CausalLMDecoder
    from transformerkit.generation.sampling import generate_tokens

    model, _ = tiny_lm()
    ids, mask = left_padded([[5, 6, 7, 8, 9], [7, 8]], pad=0)
    runs = []
    for use_cache in (True, False):
        decoder = CausalLMDecoder(model, mask, capacity=ids.shape[1] + 20, use_cache=use_cache)
        chooser = TokenChooser(GenerationConfig(do_sample=True, seed=11, temperature=1.5))
        runs.append(torch.stack(list(generate_tokens(decoder, ids, 20, chooser, None, 0)), dim=1))
    assert torch.equal(runs[0], runs[1])


def test_the_decoding_layout_computes_the_same_model() -> None:
    import copy

    from transformerkit.backends.layout import DecodingLinear, use_decoding_layout
    model, tokenizer = tiny_lm()
    laid_out = use_decoding_layout(copy.deepcopy(model))
    assert not any(isinstance(m, torch.nn.Linear) for m in laid_out.modules())
    assert any(isinstance(m, DecodingLinear) for m in laid_out.modules())
    state, original = laid_out.state_dict(), model.state_dict()
    assert state.keys() == original.keys() and all(torch.equal(state[k], original[k]) for k in state)
    ids, mask = left_padded([[5, 6, 7, 8, 9, 10, 11, 12], [7, 8, 9]], pad=0)
    with torch.no_grad():
        assert torch.allclose(laid_out(ids, attention_mask=mask)[mask], model(ids, attention_mask=mask)[mask],
                              atol=1e-5)
    config = GenerationConfig(max_new_tokens=16)
    prompts = ["Whether 'tis", "the"]
    assert TextGenerator(laid_out, tokenizer, config).generate(prompts) == \
        TextGenerator(model, tokenizer, config).generate(prompts)
    in_bf16 = copy.deepcopy(model).to(torch.bfloat16)
    laid_out_bf16 = use_decoding_layout(copy.deepcopy(in_bf16))
    with torch.no_grad():
        torch.testing.assert_close(laid_out_bf16(ids, attention_mask=mask)[mask].float(),
                                   in_bf16(ids, attention_mask=mask)[mask].float(), atol=0.05, rtol=0.02)


def test_onednn_and_mkl_products_generate_the_same_text() -> None:
    import copy

    from transformerkit.backends.onednn import use_onednn_products
    model, tokenizer = tiny_lm()
    config = GenerationConfig(max_new_tokens=16)
    prompts = ["Whether 'tis", "the"]
    expected = TextGenerator(model, tokenizer, config).generate(prompts)
    assert TextGenerator(use_onednn_products(copy.deepcopy(model)), tokenizer, config).generate(prompts) == expected
