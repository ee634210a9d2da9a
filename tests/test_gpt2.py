"""GPT-2 interop against Hugging Face ``transformers`` (the reference, test-only): logits, greedy
generation, export/import round trips, clear key errors, and GPT-2's real tokenizer files."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

from transformerkit.checkpoint import CheckpointError, load_model_dir
from transformerkit.cli import main
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.interop.gpt2 import load_hf_gpt2, save_hf_gpt2

GPT2_FILES = Path(__file__).resolve().parents[1] / "data" / "gpt2-tokenizer"

SHAPES = [  # (vocab, positions, d_model, layers, heads, inner, activation)
    dict(vocab_size=211, n_positions=64, n_embd=48, n_layer=2, n_head=4),
    dict(vocab_size=97, n_positions=48, n_embd=64, n_layer=3, n_head=8, n_inner=96, activation_function="gelu"),
    dict(vocab_size=300, n_positions=128, n_embd=32, n_layer=1, n_head=2, activation_function="relu",
         layer_norm_epsilon=1e-6),
]


def hf_model(tmp_path: Path, seed: int = 0, **shape: object) -> tuple[GPT2LMHeadModel, Path]:
    torch.manual_seed(seed)
    vocab = int(shape["vocab_size"])  # type: ignore[call-overload]
    config = GPT2Config(**shape, bos_token_id=vocab - 1, eos_token_id=vocab - 1)
    model = GPT2LMHeadModel(config).eval()
    directory = tmp_path / f"hf-{seed}"
    model.save_pretrained(directory)
    return model, directory


def padded_batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three sequences of lengths 12, 7, 3, left-padded; their mask and positions."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab - 1, (3, 12), generator=generator)
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[1, :5] = False
    mask[2, :9] = False
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions


@pytest.mark.parametrize("shape", SHAPES)
def test_logits_match_transformers_on_a_padded_batch(tmp_path: Path, shape: dict) -> None:
    reference, directory = hf_model(tmp_path, **shape)
    ours = load_hf_gpt2(directory)
    ids, mask, positions = padded_batch(shape["vocab_size"])
    with torch.no_grad():
        expected = reference(ids, attention_mask=mask.long(), position_ids=positions).logits
        got = ours(ids, attention_mask=mask)
    assert torch.allclose(got[mask], expected[mask], atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES[:2])
def test_greedy_tokens_match_transformers_for_32_steps(tmp_path: Path, shape: dict) -> None:
    reference, directory = hf_model(tmp_path, **shape)
    ours = load_hf_gpt2(directory)
    ids, mask, _ = padded_batch(shape["vocab_size"])
    eos = shape["vocab_size"] - 1
    expected = reference.generate(ids, attention_mask=mask.long(), max_new_tokens=32, min_new_tokens=32,
                                  do_sample=False, pad_token_id=eos)[:, ids.shape[1]:]
    from transformerkit.generation.config import GenerationConfig
    from transformerkit.generation.decoders import CausalLMDecoder
    from transformerkit.generation.sampling import TokenChooser, generate_tokens

    decoder = CausalLMDecoder(ours, mask, capacity=ids.shape[1] + 32)
    got = torch.stack(list(generate_tokens(decoder, ids, 32, TokenChooser(GenerationConfig()), None, eos)), dim=1)
    assert torch.equal(got, expected)


def test_export_import_round_trip_is_exact(tmp_path: Path) -> None:
    reference, directory = hf_model(tmp_path, **SHAPES[1])
    ours = load_hf_gpt2(directory)
    save_hf_gpt2(ours, tmp_path / "exported")
    again = GPT2LMHeadModel.from_pretrained(tmp_path / "exported").eval()
    for (name, a), (_, b) in zip(sorted(reference.state_dict().items()), sorted(again.state_dict().items())):
        assert torch.equal(a, b), name
    reimported = load_hf_gpt2(tmp_path / "exported")
    for key, value in ours.state_dict().items():
        assert torch.equal(value, reimported.state_dict()[key]), key


def test_pytorch_model_bin_is_read_with_weights_only(tmp_path: Path) -> None:
    reference, directory = hf_model(tmp_path, **SHAPES[0])
    state = load_file(str(directory / "model.safetensors"))
    (directory / "model.safetensors").unlink()
    torch.save({k: v for k, v in state.items()}, directory / "pytorch_model.bin")
    ours = load_hf_gpt2(directory)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(ours(ids), reference(ids).logits, atol=1e-5)
    # a pickle that is not plain weights is refused, not executed
    torch.save({"weights": state, "note": Path("x")}, directory / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="not loadable as plain weights"):
        load_hf_gpt2(directory)


def test_missing_unexpected_and_misshaped_keys_are_listed_together(tmp_path: Path) -> None:
    _, directory = hf_model(tmp_path, **SHAPES[0])
    state = load_file(str(directory / "model.safetensors"))
    del state["transformer.h.1.mlp.c_fc.bias"]
    state["transformer.h.0.attn.extra"] = torch.zeros(2)
    state["transformer.ln_f.weight"] = torch.zeros(7)
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(CheckpointError) as error:
        load_hf_gpt2(directory)
    message = str(error.value)
    assert "missing: h.1.mlp.c_fc.bias" in message
    assert "unexpected: h.0.attn.extra" in message
    assert "mis-shaped: ln_f.weight (7,) (expected (48,))" in message


def test_unsupported_options_are_refused(tmp_path: Path) -> None:
    _, directory = hf_model(tmp_path, **SHAPES[0])
    config = json.loads((directory / "config.json").read_text())
    config["scale_attn_by_inverse_layer_idx"] = True
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="scale_attn_by_inverse_layer_idx"):
        load_hf_gpt2(directory)


VARIED_TEXT = [
    "Hello world", " Hello  world ", "spaces   and\ttabs\t\tand\n\n\nnewlines \n",
    "Ünïcödé façade — naïve café; Straße", "中文字符和日本語のテキスト", "emoji 😀👍🏽 and flags 🇩🇪",
    "numbers 1234567 3.14159 1,000,000", "it's don't we'll they've I'm", "<|endoftext|>after the end",
    "code: def f(x):\n    return x**2  # comment", "    leading spaces", "trailing spaces    ",
]


@pytest.fixture(scope="module")
def gpt2_tokenizers(tmp_path_factory: pytest.TempPathFactory) -> tuple[SubwordTokenizer, GPT2Tokenizer]:
    import gzip
    directory = tmp_path_factory.mktemp("gpt2-files")
    for name, target in (("encoder.json.gz", "vocab.json"), ("vocab.bpe.gz", "merges.txt")):
        (directory / target).write_bytes(gzip.decompress((GPT2_FILES / name).read_bytes()))
    return SubwordTokenizer.from_directory(GPT2_FILES), GPT2Tokenizer(str(directory / "vocab.json"),
                                                                     str(directory / "merges.txt"))


def test_gpt2_tokenizer_matches_transformers(gpt2_tokenizers: tuple[SubwordTokenizer, GPT2Tokenizer]) -> None:
    ours, reference = gpt2_tokenizers
    assert ours.vocab_size == 50257 and ours.eos_id == 50256
    assert ours.encode(["Hello world"]) == [[15496, 995]]
    for text in VARIED_TEXT:
        assert ours.encode([text])[0] == reference.encode(text), text
        assert ours.tokenizer.decode(ours.encode([text])[0], skip_special_tokens=False) == text


def test_convert_cli_imports_and_exports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reference, directory = hf_model(tmp_path, vocab_size=50257, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    assert main(["convert", str(directory), str(tmp_path / "ours"), "--tokenizer", str(GPT2_FILES)]) == 0
    model, tokenizer, _ = load_model_dir(tmp_path / "ours")
    assert tokenizer.vocab_size == 50257
    assert main(["generate", "--model", str(tmp_path / "ours"), "--prompt", "Hello", "--greedy",
                 "--max-new-tokens", "5"]) == 0
    printed = capsys.readouterr().out
    ids = torch.tensor([[15496]])
    expected = reference.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=50256)[0, 1:].tolist()
    assert printed == "Hello" + tokenizer.decode([expected])[0] + "\n"
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "back")]) == 0
    again = GPT2LMHeadModel.from_pretrained(tmp_path / "back").eval()
    for (name, a), (_, b) in zip(sorted(reference.state_dict().items()), sorted(again.state_dict().items())):
        assert torch.equal(a, b), name
    # without tokenizer files the import says what to pass
    assert main(["convert", str(directory), str(tmp_path / "no-tokenizer")]) == 2
    assert "no tokenizer.json" in capsys.readouterr().err


def test_export_refuses_a_model_outside_gpt2s_layout(tmp_path: Path) -> None:
    from transformerkit.config import preset
    from transformerkit.models.decoder_only import DecoderOnlyTransformer

    model = DecoderOnlyTransformer(preset("gpt-tiny", norm_position="post", positional="sinusoidal"))
    with pytest.raises(CheckpointError, match="positional='sinusoidal' .*norm_position='post'"):
        save_hf_gpt2(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()
