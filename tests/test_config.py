"""Configuration validation, presets, and the command line's model-info."""

import json
import subprocess
import sys

import pytest
import torch

from transformerkit.cli import main
from transformerkit.config import EncoderDecoderConfig, TransformerConfig, preset
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer
from transformerkit.tasks import load_recipe
from transformerkit.training.schedule import cosine_lr, inverse_sqrt_lr, inverse_sqrt_scheduler
from transformerkit.typed_config import apply_overrides


@pytest.mark.parametrize("changes,argument", [
    ({"d_model": 500, "num_heads": 8}, "d_model"),
    ({"d_model": 0}, "d_model"),
    ({"num_heads": -1}, "num_heads"),
    ({"d_ff": 0}, "d_ff"),
    ({"num_encoder_layers": -1}, "num_encoder_layers"),
    ({"num_encoder_layers": 0, "num_decoder_layers": 0}, "at least one layer"),
    ({"num_decoder_layers": -2}, "num_decoder_layers"),
    ({"vocab_size": 0}, "vocab_size"),
    ({"d_k": 0}, "d_k"),
    ({"d_v": -4}, "d_v"),
    ({"dropout": 1.0}, "dropout"),
    ({"dropout": -0.1}, "dropout"),
    ({"attention_dropout": 1.5}, "attention_dropout"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"positional": "relative"}, "positional"),
    ({"norm_position": "middle"}, "norm_position"),
    ({"d_model": "wide"}, "d_model"),
    ({"positional": "rotary", "d_k": 7, "d_v": 8}, "d_k"),
    ({"pad_id": 40000}, "pad_id"),
])
def test_invalid_configurations_name_the_argument(changes: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        EncoderDecoderConfig(**changes)


def test_explicit_head_widths_lift_the_divisibility_rule() -> None:
    config = TransformerConfig(d_model=500, num_heads=8, d_k=64, d_v=32)
    assert (config.head_dim_k, config.head_dim_v) == (64, 32)


def test_unknown_preset_and_keys() -> None:
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
    with pytest.raises(ValueError, match="unknown configuration key"):
        preset("base", d_modle=512)


def test_config_round_trips_through_json(tmp_path) -> None:
    config = preset("small", positional="rotary", d_k=16, tgt_vocab_size=900, tie_embeddings=False)
    config.save(tmp_path / "config.json")
    assert EncoderDecoderConfig.load(tmp_path / "config.json") == config


def test_overrides_are_parsed_to_the_field_types() -> None:
    values = apply_overrides({}, TransformerConfig, ["d_k=none", "d_v=32", "dropout=0.3", "bias=false",
                                                     "positional=learned"])
    assert values == {"d_k": None, "d_v": 32, "dropout": 0.3, "bias": False, "positional": "learned"}
    with pytest.raises(ValueError, match="positional"):
        apply_overrides({}, TransformerConfig, ["positional=fancy"])
    with pytest.raises(ValueError, match="unknown configuration key: d_modle"):
        apply_overrides({}, TransformerConfig, ["d_modle=3"])


def test_model_info_json_counts_parameters(capsys) -> None:
    assert main(["model-info", "--preset", "base", "--vocab-size", "1000", "--set", "d_k=32", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    expected = sum(p.numel() for p in EncoderDecoderTransformer(preset("base", vocab_size=1000, d_k=32)).parameters())
    assert info["parameters"] == expected
    assert isinstance(info["parameters"], int)
    assert sum(info["parameters_by_part"].values()) == expected
    assert info["config"]["d_k"] == 32


@pytest.mark.parametrize("argv,message", [
    (["model-info", "--preset", "huge"], "unknown preset 'huge'"),
    (["model-info", "--set", "d_modle=3"], "unknown configuration key: d_modle"),
    (["model-info", "--set", "dropout=2"], "dropout must be in [0, 1)"),
    (["model-info", "--set", "d_model"], "--set expects key=value"),
    (["model-info", "--vocab-size", "many"], "invalid int value"),
])
def test_model_info_errors_are_one_line(argv: list[str], message: str, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("transformerkit: error: ") and message in err
    assert err.count("\n") == 1


def test_entry_point_runs_as_a_module() -> None:
    done = subprocess.run([sys.executable, "-m", "transformerkit", "model-info", "--preset", "nope"],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "unknown preset" in done.stderr


def test_inverse_sqrt_schedule_is_the_paper_formula() -> None:
    d_model, warmup = 512, 4000
    for step in (1, 100, 4000, 4001, 100000):
        assert inverse_sqrt_lr(step, d_model, warmup) == pytest.approx(
            d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5))
    assert max(range(1, 10000), key=lambda s: inverse_sqrt_lr(s, d_model, warmup)) == warmup
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = inverse_sqrt_scheduler(optimizer, d_model, warmup)
    for step in range(1, 4):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(inverse_sqrt_lr(step, d_model, warmup))
        optimizer.step()
        scheduler.step()


def test_cosine_schedule_warms_up_like_the_paper_then_decays_to_zero() -> None:
    d_model, warmup, total = 256, 100, 1100
    peak = inverse_sqrt_lr(warmup, d_model, warmup, 0.5)
    assert cosine_lr(50, d_model, warmup, total, 0.5) == pytest.approx(inverse_sqrt_lr(50, d_model, warmup, 0.5))
    assert cosine_lr(warmup + 500, d_model, warmup, total, 0.5) == pytest.approx(peak / 2)
    assert cosine_lr(total, d_model, warmup, total, 0.5) == pytest.approx(0.0, abs=1e-12)
    assert cosine_lr(total + 50, d_model, warmup, total, 0.5) == pytest.approx(0.0, abs=1e-12)
    assert cosine_lr(warmup + 500, d_model, warmup, None, 0.5) == pytest.approx(peak)  # not planned yet: the peak
    with pytest.raises(ValueError, match="training.schedule cosine decays to 0 at training.max_steps, or at the step "
                                         "training.max_minutes allows: set one"):
        load_recipe(None, ["data.train=x.tsv", "training.schedule=cosine", "training.max_epochs=5"])
