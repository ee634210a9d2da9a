"""Checkpoints (atomic, strict, pickle-free), exact resume, the recipe loader, and the CLI end to end."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from transformerkit.backends.calibration import ATTENTION_OVERRIDE, DROPOUT_OVERRIDE, MEMORY_OVERRIDE
from transformerkit.generation.config import GenerationConfig
from transformerkit.checkpoint import (CheckpointError, atomic_directory, load_model_dir,
                                       load_training_state, save_model_dir)
from transformerkit.cli import main
from transformerkit.config import preset
from transformerkit.data.parallel import write_tsv
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer
from transformerkit.nn.attention import MultiHeadAttention
from transformerkit.nn.dropout import Dropout
from transformerkit.tasks import load_recipe
from transformerkit.training.trainer import Trainer



def recipe_overrides(corpus: Path, out: Path, **training: object) -> list[str]:
    values = {
        "data.train": corpus / "train.tsv", "data.valid": corpus / "valid.tsv", "data.vocab_size": 300,
        "model.d_model": 32, "model.d_ff": 64, "model.num_heads": 4, "model.dropout": 0.1,
        "training.output_dir": out, "training.max_tokens": 500, "training.accumulate": 2,
        "training.warmup_steps": 4, "training.validate_every": 2, "training.valid_bleu_sentences": 10,
        "training.save_every": 3, "training.log_every": 1, "training.progress": False,
        "training.tensorboard": False, "decoding.beam": 2, **training,
    }
    return ["model.preset=tiny"] + [f"{k}={v}" for k, v in values.items()]


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def test_resume_is_bit_identical(small_corpus: Path, tmp_path: Path) -> None:
    straight = Trainer(load_recipe(None, recipe_overrides(small_corpus, tmp_path / "a", **{"training.max_steps": 6})))
    straight.train()
    interrupted = tmp_path / "b"
    Trainer(load_recipe(None, recipe_overrides(small_corpus, interrupted, **{"training.max_steps": 3}))).train()
    with pytest.raises(ValueError, match="already holds a training run"):
        Trainer(load_recipe(None, recipe_overrides(small_corpus, interrupted, **{"training.max_steps": 6})))
    resumed = Trainer(load_recipe(None, recipe_overrides(small_corpus, interrupted, **{"training.max_steps": 6})),
                      resume=True)
    assert resumed.progress.step == 3
    resumed.train()
    a = weights(tmp_path / "a" / "checkpoints" / "step-00000006")
    b = weights(interrupted / "checkpoints" / "step-00000006")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    state_a = load_training_state(tmp_path / "a" / "checkpoints" / "step-00000006")
    state_b = load_training_state(interrupted / "checkpoints" / "step-00000006")
    assert torch.equal(state_a["rng_cpu"], state_b["rng_cpu"])
    assert state_a["progress"]["step"] == state_b["progress"]["step"] == 6
    # the run kept what it needs: latest and best pointers, the final averaged model
    checkpoints = interrupted / "checkpoints"
    assert (checkpoints / "latest").resolve().name == "step-00000006"
    assert (checkpoints / "best").resolve().parent == checkpoints.resolve()
    log = [json.loads(line) for line in (interrupted / "log.jsonl").read_text().splitlines()]
    assert {"train", "valid", "start", "stop"} <= {r["event"] for r in log}
    assert all(k in log[1] for k in ("loss", "lr", "tokens_per_second"))
    model, _, _ = load_model_dir(interrupted / "model")
    assert model.config.vocab_size == 300


def test_cosine_over_a_time_budget_plans_its_steps_once_and_resumes_with_the_plan(small_corpus: Path,
                                                                                   tmp_path: Path) -> None:
    from transformerkit.training.schedule import cosine_lr

    out = tmp_path / "run"
    budget = {"training.schedule": "cosine", "training.max_minutes": 30, "training.warmup_steps": 2,
              "training.lr_scale": 0.5}
    first = Trainer(load_recipe(None, recipe_overrides(small_corpus, out, **budget, **{"training.max_epochs": 1})))
    first.train()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    plans = [r for r in log if r["event"] == "plan"]
    assert [r["step"] for r in plans] == [2]  # at the end of the warm-up
    planned = plans[0]["planned_steps"]
    assert planned == first.progress.planned_steps > first.progress.step  # 30 minutes hold many steps
    assert load_training_state(out / "checkpoints" / "latest")["progress"]["planned_steps"] == planned
    Trainer(load_recipe(None, recipe_overrides(small_corpus, out, **budget, **{"training.max_epochs": 2})),
            resume=True).train()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len([r for r in log if r["event"] == "plan"]) == 1  # the resumed run keeps the plan
    rows = [r for r in log if r["event"] == "train"]
    assert rows[-1]["step"] > rows[0]["step"] >= 1
    for r in rows:  # after step s the optimizer holds the rate of step s + 1, decaying towards the plan's end
        expected = cosine_lr(r["step"] + 1, 32, 2, planned if r["step"] > 2 else None, 0.5)  # planned after step 2
        assert r["lr"] == pytest.approx(expected)
    planned_run = Trainer(load_recipe(None, recipe_overrides(small_corpus, tmp_path / "short", **budget)))
    planned_run.progress.planned_steps = 3  # as if the warm-up had measured that 3 steps fill the budget
    done = planned_run.train()
    assert (done.steps, done.stopped_because) == (3, "planned_steps")
    assert planned_run.scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)  # the cosine's end


def test_the_plan_measures_speed_after_the_slow_first_steps(small_corpus: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The first steps (allocation, kernel choice) are slow: the plan takes the speed of the
    warm-up's second half, so a fast steady state is not cut short."""
    from transformerkit.training import trainer as trainer_module

    budget = {"training.schedule": "cosine", "training.max_minutes": 1, "training.warmup_steps": 4}
    trainer = Trainer(load_recipe(None, recipe_overrides(small_corpus, tmp_path / "run", **budget)))
    clock = [0.0]
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: clock[0])
    log = trainer_module.JsonlLog(tmp_path / "log.jsonl", None)
    trainer._session_start = 0.0  # the run's clock starts at 0
    for step, seconds in ((1, 40.0), (2, 50.0), (3, 51.0), (4, 52.0)):  # 25 s per step, then 1 s
        trainer.progress.step, clock[0] = step, seconds
        trainer._plan_steps(log)
    assert trainer.progress.planned_steps == 4 + (60 - 52) // 1  # not 4 · 60 / 52 steps at the average speed


def test_a_warmup_share_sizes_the_warmup_to_the_run_and_keeps_the_peak(small_corpus: Path, tmp_path: Path) -> None:
    """``warmup_share`` with ``max_steps``: the warm-up is that share of the steps (at most
    ``warmup_steps``), the peak is the one ``warmup_steps`` sets, a resumed run keeps the plan."""
    from transformerkit.training.schedule import inverse_sqrt_lr

    out = tmp_path / "run"
    settings = {"training.max_steps": 4, "training.warmup_steps": 40, "training.warmup_share": 0.5,
                "training.save_every": 2}
    first = Trainer(load_recipe(None, recipe_overrides(small_corpus, out, **{**settings, "training.max_steps": 2})))
    assert first.progress.planned_warmup == 1  # half of 2 steps
    first.progress.planned_warmup = 2  # as planned for 4 steps
    first.train()
    resumed = Trainer(load_recipe(None, recipe_overrides(small_corpus, out, **settings)), resume=True)
    assert resumed.progress.planned_warmup == 2  # kept from the checkpoint, not planned again
    resumed.train()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    rates = [r["lr"] for r in log if r["event"] == "train"]
    peak = 32 ** -0.5 * 40 ** -0.5  # d_model 32, warmup_steps 40
    assert rates == pytest.approx([peak, peak * (2 / 3) ** 0.5, peak * (2 / 4) ** 0.5, peak * (2 / 5) ** 0.5])
    assert inverse_sqrt_lr(7, 32, 40) == pytest.approx(32 ** -0.5 * min(7 ** -0.5, 7 * 40 ** -1.5))  # the paper's
    with pytest.raises(ValueError, match="training.warmup_share must be in"):
        load_recipe(None, recipe_overrides(small_corpus, out, **{**settings, "training.warmup_share": 1.5}))


def test_a_save_share_spaces_the_checkpoints_over_the_run(small_corpus: Path, tmp_path: Path) -> None:
    """``save_share``: a checkpoint every that share of the run (at most every ``save_every``
    steps), so the averaged last checkpoints cover the run's end; a resumed run keeps the interval."""
    out = tmp_path / "run"
    settings = {"training.max_steps": 9, "training.save_share": 0.34, "training.save_every": 100,
                "training.validate_every": 100, "training.keep_checkpoints": 10}
    first = Trainer(load_recipe(None, recipe_overrides(small_corpus, out, **settings)))
    assert first.progress.planned_save_every == 3
    first.run.training.max_steps = 4  # interrupted at step 4
    first.train()
    resumed = Trainer(load_recipe(None, recipe_overrides(small_corpus, out, **settings)), resume=True)
    assert resumed.progress.planned_save_every == 3
    resumed.train()
    assert sorted(d.name for d in (out / "checkpoints").glob("step-*")) == [
        f"step-{n:08d}" for n in (3, 4, 6, 9)]  # 4: where the first session stopped
    capped = Trainer(load_recipe(None, recipe_overrides(small_corpus, tmp_path / "capped", **{
        **settings, "training.save_every": 2})))
    assert capped.progress.planned_save_every == 2


def test_a_plan_for_a_time_budget_is_timed_without_a_trace(small_corpus: Path, tmp_path: Path) -> None:
    """With ``max_minutes``: the step is timed before training (logged); timing it leaves the run
    as it was — the same weights as a run given that plan (warm-up, checkpoint interval) without
    timing anything."""
    settings = {"training.max_minutes": 0.05, "training.max_steps": None, "training.warmup_steps": 10 ** 6}
    plans = []
    for run, share in (("timed", 0.1), ("given", None)):  # one after the other: they share the random stream
        trainer = Trainer(load_recipe(None, recipe_overrides(small_corpus, tmp_path / run, **{
            **settings, "training.warmup_share": share, "training.save_share": share and 0.5})))
        if share is None:  # the timed run's plan, given
            trainer.progress.planned_warmup, trainer.progress.planned_save_every = plans[0]
        plans.append((trainer.progress.planned_warmup, trainer.progress.planned_save_every))
        trainer.run.training.max_minutes, trainer.run.training.max_steps = None, 3  # the same length whatever the clock
        trainer.train()
    warmup, save_every = plans[0]
    assert warmup is not None and 1 <= warmup < 10 ** 6 and save_every is not None and 1 <= save_every <= 3
    a, b = (weights(tmp_path / run / "checkpoints" / "step-00000003") for run in ("timed", "given"))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    plan = [json.loads(line) for line in (tmp_path / "timed" / "log.jsonl").read_text().splitlines()][1]
    assert plan["event"] == "plan_start" and plan["seconds_per_step"] > 0
    assert (plan["warmup_steps"], plan["save_every"]) == (warmup, save_every)


def test_resuming_with_another_model_shape_names_the_settings(small_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    Trainer(load_recipe(None, recipe_overrides(small_corpus, out, **{"training.max_steps": 2}))).train()
    changed = load_recipe(None, recipe_overrides(small_corpus, out, **{"training.max_steps": 4, "model.d_model": 64}))
    with pytest.raises(CheckpointError, match=r"latest does not fit this run's model \(model.d_model 32 in the "
                                              r"run, 64 now\): resume with the run's own recipe, transformerkit "
                                              r"train .*run.yaml --resume$"):
        Trainer(changed, resume=True)
    resumed = Trainer(load_recipe(out / "run.yaml", ["training.max_steps=3"]), resume=True)  # what the error says
    assert resumed.progress.step == 2 and resumed.train().steps == 3


def test_a_checkpoint_with_separate_qkv_projections_resumes(small_corpus: Path, tmp_path: Path) -> None:
    """Checkpoints written before Q, K, V were fused (weights and Adam moments per projection) resume exactly."""
    from safetensors.torch import save_file

    from transformerkit.interop.common import separate_projections
    straight = tmp_path / "a"
    Trainer(load_recipe(None, recipe_overrides(small_corpus, straight, **{"training.max_steps": 6}))).train()
    old = tmp_path / "b"
    Trainer(load_recipe(None, recipe_overrides(small_corpus, old, **{"training.max_steps": 3}))).train()
    checkpoint = (old / "checkpoints" / "latest").resolve()
    save_file(separate_projections(weights(checkpoint)), str(checkpoint / "model.safetensors"))
    state = torch.load(checkpoint / "training_state.pt", weights_only=True)
    moments = state["optimizer"]["state"]
    for name in [n for n in moments if ".self_attention.qkv_proj." in n]:
        parts = {key: value.chunk(3) if value.dim() else [value] * 3 for key, value in moments.pop(name).items()}
        for i, projection in enumerate(("q_proj", "k_proj", "v_proj")):
            moments[name.replace("qkv_proj", projection)] = {key: chunks[i] for key, chunks in parts.items()}
    for group in state["optimizer"]["param_groups"]:
        group["params"] = list(moments)
    torch.save(state, checkpoint / "training_state.pt")
    Trainer(load_recipe(None, recipe_overrides(small_corpus, old, **{"training.max_steps": 6})), resume=True).train()
    a, b = weights(straight / "checkpoints" / "step-00000006"), weights(old / "checkpoints" / "step-00000006")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_auto_precision_trains_in_fp32_where_bf16_is_emulated_and_a_resume_keeps_the_choice(
        small_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """On an AVX2-only CPU (detection monkeypatched) ``precision: auto`` trains in fp32, says so at
    the start and in the log; a run resumed on a machine with bf16 hardware continues in fp32."""
    from transformerkit.backends import machine
    monkeypatch.setattr(machine, "native_bf16", lambda: False)
    out = tmp_path / "run"
    trainer = Trainer(load_recipe(None, recipe_overrides(small_corpus, out, **{"training.max_steps": 2,
                                                                                 "training.precision": "auto"})))
    assert trainer.progress.precision == "fp32" and not isinstance(trainer.autocast, torch.autocast)
    assert "precision: fp32 (auto: this CPU has no bf16 hardware" in capsys.readouterr().err
    trainer.train()
    start = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert start["speed_choices"]["precision"]["use"] is False
    monkeypatch.setattr(machine, "native_bf16", lambda: True)
    resumed = Trainer(load_recipe(None, recipe_overrides(small_corpus, out, **{"training.max_steps": 3,
                                                                                 "training.precision": "auto"})),
                      resume=True)
    assert resumed.progress.precision == "fp32" and "kept" in resumed.speed_choices["precision"].reason


def test_explicit_bf16_where_it_is_emulated_trains_after_a_warning_with_the_measured_cost(
        small_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from transformerkit.backends import machine
    monkeypatch.setattr(machine, "native_bf16", lambda: False)
    trainer = Trainer(load_recipe(None, recipe_overrides(small_corpus, tmp_path / "run", **{
        "training.max_steps": 1, "training.precision": "bf16"})))
    assert trainer.progress.precision == "bf16" and isinstance(trainer.autocast, torch.autocast)
    warning = capsys.readouterr().err
    assert warning.startswith("warning: training.precision bf16 is emulated on this CPU") and " ms" in warning
    assert warning.count("\n") == 1 and "precision: auto picks fp32" in warning
    assert trainer.train().steps == 1
    monkeypatch.setattr(machine, "native_bf16", lambda: True)  # bf16 as asked, nothing measured
    Trainer(load_recipe(None, recipe_overrides(small_corpus, tmp_path / "unmeasured", **{
        "training.max_steps": 1, "training.precision": "bf16"}))).train()
    measured, unmeasured = (weights(tmp_path / run / "checkpoints" / "step-00000001") for run in ("run", "unmeasured"))
    for key in measured:  # the measurement left no trace: same random stream (dropout), no stale gradients
        assert torch.equal(measured[key], unmeasured[key]), key


def key_bias_elements(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """A mask of the key-projection biases in a parameter: the K third of a fused ``qkv_proj.bias``,
    the K half of a cross-attention ``kv_proj.bias``; False elsewhere."""
    mask = torch.zeros_like(tensor, dtype=torch.bool)
    if name.endswith("qkv_proj.bias"):
        mask[tensor.numel() // 3:2 * tensor.numel() // 3] = True
    elif name.endswith("kv_proj.bias"):
        mask[:tensor.numel() // 2] = True
    return mask


def test_a_run_written_before_the_architecture_change_resumes_exactly(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint of the code before tasks became plug-ins and speed measures opt-in
    (tests/fixtures/pre-architecture-run, written with one thread) resumes: straight to step 4
    and through step 3 give the same bits, and the weights that code reached at step 4.

    Those weights match bit for bit on the machine that wrote them; another CPU's fp32 products
    round differently (AVX2 vs AVX-512 kernels), by ~1e-7 here. One kind of weight cannot be
    compared that closely on any other CPU: the biases of the key projections. Their gradient is
    0 in exact arithmetic — a bias b on every key adds q·b to every score of a query, which the
    softmax cancels — so what they receive is rounding noise, and Adam divides a gradient by its
    own root mean square: noise of either sign moves them by up to lr per step (measured:
    differences up to 2.3e-3 on an AMD Zen 4, 1.7e-3 on a Zen 2). They are held to that bound,
    2 · Σ lr over the two resumed steps; every other weight to 1e-4, far below what one step moves
    a weight (~0.1 here).
    """
    import shutil

    fixture = Path(__file__).resolve().parent / "fixtures" / "pre-architecture-run"
    finals = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # oneDNN's summation order depends on the thread count
    for stops in ([4], [3, 4]):
        here = tmp_path / f"via-{'-'.join(map(str, stops))}"
        shutil.copytree(fixture, here, symlinks=True)
        monkeypatch.chdir(here)  # the recipe's paths are relative to the run's directory
        for stop in stops:
            trainer = Trainer(load_recipe(here / "run" / "run.yaml", [f"training.max_steps={stop}"]), resume=True)
            assert trainer.train().steps == stop
        finals.append(weights(here / "run" / "checkpoints" / "step-00000004"))
    torch.set_num_threads(threads)
    expected = load_file(str(fixture / "expected" / "step-00000004.safetensors"))
    assert finals[0].keys() == finals[1].keys() == expected.keys()
    d_model, warmup = 16, 4  # the fixture's run.yaml
    adam_bound = 2 * sum(d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5) for step in (3, 4))
    key_biases = 0
    for key in expected:
        assert torch.equal(finals[0][key], finals[1][key]), key
        noise = key_bias_elements(key, expected[key])
        key_biases += int(noise.sum())
        torch.testing.assert_close(finals[0][key][~noise], expected[key][~noise], rtol=0, atol=1e-4, msg=key)
        assert torch.all((finals[0][key][noise] - expected[key][noise]).abs() <= adam_bound), key
    assert key_biases == 6 * 16  # self-attention in 2 + 2 layers, cross-attention in 2


def test_model_directory_round_trip_and_strict_loading(tmp_path: Path) -> None:
    tokenizer = SubwordTokenizer.train(["Open the file", "Datei öffnen"] * 10, vocab_size=40, min_frequency=1)
    torch.manual_seed(0)
    model = EncoderDecoderTransformer(preset("tiny", vocab_size=tokenizer.vocab_size, d_model=32, d_ff=64)).eval()
    save_model_dir(tmp_path / "m", model, tokenizer, GenerationConfig(beam=3, target_lang="de"))
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "tokenizer.json"]
    loaded, _, generation = load_model_dir(tmp_path / "m")
    src, tgt = torch.tensor([[5, 6, 7, 2]]), torch.tensor([[1, 5, 6]])
    torch.testing.assert_close(loaded(src, tgt), model(src, tgt), rtol=0, atol=0)
    assert generation.beam == 3 and generation.target_lang == "de"
    assert loaded.output_projection.weight is loaded.src_embedding.tokens.weight  # tying survives

    tensors = load_file(str(tmp_path / "m" / "model.safetensors"))
    key = next(k for k in tensors if k.endswith("linear1.weight"))
    tensors.pop(key)
    tensors["encoder.extra.weight"] = torch.zeros(1)
    save_file(tensors, str(tmp_path / "m" / "model.safetensors"))
    with pytest.raises(CheckpointError, match=rf"(?s)does not fit the model.*{key}.*encoder.extra.weight"):
        load_model_dir(tmp_path / "m")

    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["model_type"] = "gpt2"
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="model_type is 'gpt2'"):
        load_model_dir(tmp_path / "m")
    with pytest.raises(CheckpointError, match="not a model directory"):
        load_model_dir(tmp_path / "missing")


def test_atomic_directory_keeps_the_old_version_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    with atomic_directory(target) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(target) as tmp:
            (tmp / "weights").write_text("v2-partial")
            raise KeyboardInterrupt  # killed mid-write
    assert (target / "weights").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary left behind
    with atomic_directory(target) as tmp:
        (tmp / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2"


def test_recipe_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown configuration key: training.max_tokns"):
        load_recipe(None, ["data.train=x.tsv", "training.max_tokns=5"])
    with pytest.raises(ValueError, match="training.max_tokens must be a positive integer"):
        load_recipe(None, ["data.train=x.tsv", "training.max_tokens=0", "training.max_steps=5"])
    with pytest.raises(ValueError, match="model.preset: unknown preset 'huge'"):
        load_recipe(None, ["data.train=x.tsv", "model.preset=huge", "training.max_steps=5"])
    with pytest.raises(ValueError, match="training.precision has an invalid value"):
        load_recipe(None, ["data.train=x.tsv", "training.precision=fp8", "training.max_steps=5"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {train: x.tsv}\nmodel: {d_model: 'wide'}\ntraining: {max_steps: 5}\n")
    with pytest.raises(ValueError, match="d_model has an invalid value 'wide'"):
        load_recipe(bad)
    run = load_recipe(None, ["data.train=x.tsv", "training.max_steps=5", "model.preset=small", "model.d_ff=512"])
    assert (run.model.d_model, run.model.d_ff) == (256, 512)
    exponent = tmp_path / "exponent.yaml"  # PyYAML alone reads 1e-9 as a string (YAML 1.1)
    exponent.write_text("data: {train: x.tsv}\ntraining: {max_steps: 5, adam_eps: 1e-9, lr_scale: 2E+0}\n")
    run = load_recipe(exponent)
    assert (run.training.adam_eps, run.training.lr_scale) == (1e-9, 2.0)


@pytest.mark.parametrize("setting, message", [
    ("training.lr_scale=nan", "training.lr_scale and training.adam_eps must be positive numbers, got nan"),
    ("training.lr_scale=-1", "training.lr_scale and training.adam_eps must be positive numbers, got -1"),
    ("training.clip_norm=nan", "training.clip_norm must be positive or null, got nan"),
    ("training.max_minutes=inf", "training.max_minutes must be positive or null, got inf"),
    ("training.weight_decay=-0.1", "training.weight_decay must be 0 or positive, got -0.1"),
    ("training.adam_betas=0.9,0.98,0.5", r"training.adam_betas must be two numbers in \[0, 1\), got \[0.9, 0.98, 0.5\]"),
    ("training.adam_betas=0.9,1.0", r"training.adam_betas must be two numbers in \[0, 1\)"),
])
def test_numbers_out_of_range_are_refused_before_training(setting: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_recipe(None, ["data.train=x.tsv", "training.max_steps=5", setting])


def test_a_key_written_twice_in_a_recipe_is_an_error(tmp_path: Path) -> None:
    twice = tmp_path / "twice.yaml"
    twice.write_text("data: {train: x.tsv}\ntraining:\n  max_steps: 5\n  lr_scale: 1.0\n  lr_scale: 9.0\n")
    with pytest.raises(ValueError, match=r"twice.yaml: invalid YAML \(duplicate key 'lr_scale' in .*line 5"):
        load_recipe(twice)
    not_a_number = tmp_path / "nan.yaml"  # YAML's own spelling of NaN is refused like the command line's
    not_a_number.write_text("data: {train: x.tsv}\ntraining: {max_steps: 5, lr_scale: .nan}\n")
    with pytest.raises(ValueError, match="training.lr_scale and training.adam_eps must be positive numbers, got nan"):
        load_recipe(not_a_number)


def test_training_without_any_usable_pair_stops_with_an_error(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_tsv(corpus / "train.tsv", [("Open the file", "Datei öffnen")] * 20)
    write_tsv(corpus / "valid.tsv", [("Open the file", "Datei öffnen")])
    run = load_recipe(None, recipe_overrides(corpus, tmp_path / "out", **{"training.max_steps": 5,
                                                                           "data.max_length": 1}))
    with pytest.raises(ValueError, match=r"train.tsv: no training examples left to batch \(train_pairs 20, "
                                         r"skipped_empty 0, dropped_too_long 20\)"):
        Trainer(run)


def test_a_file_where_the_run_directory_goes_and_an_empty_valid_file_are_refused_up_front(
        small_corpus: Path, tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("not a directory\n")
    with pytest.raises(ValueError, match=r"taken is a file, not a directory: choose another training.output_dir"):
        Trainer(load_recipe(None, recipe_overrides(small_corpus, tmp_path / "taken", **{"training.max_steps": 2})))
    (tmp_path / "run" / "checkpoints").parent.mkdir()
    (tmp_path / "run" / "checkpoints").write_text("")
    with pytest.raises(ValueError, match=r"checkpoints is a file, not a directory"):
        Trainer(load_recipe(None, recipe_overrides(small_corpus, tmp_path / "run", **{"training.max_steps": 2})))
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty.tsv: no validation pairs \(empty file, or every line blank or one-sided\)"):
        Trainer(load_recipe(None, recipe_overrides(small_corpus, tmp_path / "other", **{"training.max_steps": 2,
                                                                                        "data.valid": empty})))


def test_shipped_recipes_load() -> None:
    root = Path(__file__).resolve().parents[1] / "configs"
    for recipe in sorted(root.glob("*.yaml")):
        run = load_recipe(recipe)
        assert run.training.output_dir.startswith("runs/")


def test_cli_train_translate_evaluate_plot(small_corpus: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    overrides = recipe_overrides(small_corpus, out, **{"training.max_steps": 4, "data.test": small_corpus / "test.tsv"})
    argv = ["train", "-"]
    for pair in overrides:
        argv += ["--set", pair]
    argv[1] = str(tmp_path / "empty.yaml")
    (tmp_path / "empty.yaml").write_text("{}\n")
    assert main(argv) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(scores) >= {"bleu", "chrf"} and scores["sentences"] == 30
    assert json.loads((out / "results.json").read_text())["bleu"] == scores["bleu"]

    assert main(["evaluate", "--model", str(out / "model"), "--data", str(small_corpus / "test.tsv"),
                 "--beam", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["beam"] == 1

    lines = "Open the file\n\nSave\n"
    done = subprocess.run([sys.executable, "-m", "transformerkit", "translate", "--model", str(out / "model")],
                          input=lines, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 3 and done.stdout.splitlines()[1] == ""

    png = tmp_path / "attention.png"
    assert main(["plot-attention", "--model", str(out / "model"), "--text", "Open the file", "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"

    assert main(["average-checkpoints", "--run", str(out), "--last", "2", "--out", str(tmp_path / "avg")]) == 0
    a = weights(out / "checkpoints" / "step-00000003")
    b = weights(out / "checkpoints" / "step-00000004")
    averaged = weights(tmp_path / "avg")
    key = next(iter(a))
    torch.testing.assert_close(averaged[key], (a[key] + b[key]) / 2)

    assert main(["translate", "--model", str(tmp_path / "nowhere")]) == 2
    assert "not a model directory" in capsys.readouterr().err


def test_ctrl_c_saves_a_checkpoint_that_resumes(small_corpus: Path, tmp_path: Path) -> None:
    import signal
    import time

    out = tmp_path / "run"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("{}\n")
    argv = [sys.executable, "-m", "transformerkit", "train", str(recipe)]
    for pair in recipe_overrides(small_corpus, out, **{"training.max_steps": 100000, "training.save_every": 100000,
                                                          "training.validate_every": 100000}):
        argv += ["--set", pair]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until a few steps are logged
        log = out / "log.jsonl"
        if log.exists() and log.read_text().count('"event": "train"') >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"resume with: transformerkit train {out / 'run.yaml'} --resume" in err  # the run's own settings
    latest = (out / "checkpoints" / "latest").resolve()
    step = load_training_state(latest)["progress"]["step"]
    assert step >= 3 and latest.name == f"step-{step:08d}"
    resumed = Trainer(load_recipe(None, recipe_overrides(small_corpus, out, **{"training.max_steps": step + 1})),
                      resume=True)
    assert resumed.progress.step == step
    assert resumed.train().steps == step + 1


def test_a_trained_model_has_a_model_card_that_its_export_carries(small_corpus: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    (tmp_path / "empty.yaml").write_text("{}\n")
    argv = ["train", str(tmp_path / "empty.yaml")]
    for pair in recipe_overrides(small_corpus, out, **{"training.max_steps": 2, "data.test": small_corpus / "test.tsv"}):
        argv += ["--set", pair]
    assert main(argv) == 0
    scores = json.loads((out / "results.json").read_text())
    card = (out / "model" / "README.md").read_text(encoding="utf-8")
    assert card.startswith("# run: a translation model")
    assert "family: `transformerkit-encoder-decoder`" in card and "2 steps (stopped: max_steps)" in card
    assert f'"bleu": {scores["bleu"]}' in card and "family: encoder-decoder" in card  # scores, recipe
    model, _, _ = load_model_dir(out / "model")
    assert f"{sum(p.numel() for p in model.parameters()):,} parameters" in card
    assert main(["export", "--model", str(out / "model"), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    exported = (tmp_path / "hf" / "README.md").read_text(encoding="utf-8")
    assert exported.startswith(card) and "`transformerkit export --format hf`" in exported


def test_the_attention_kernel_dropout_draws_and_memory_retention_are_measured_on_the_runs_own_step(
        small_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformerkit.training import speed_measures
    for variable in (ATTENTION_OVERRIDE, DROPOUT_OVERRIDE, MEMORY_OVERRIDE):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("TRANSFORMERKIT_CACHE", str(tmp_path / "cache"))  # measured here, not kept from another test
    retained: list[bool] = []
    monkeypatch.setattr(speed_measures, "set_freed_memory_retained", lambda on: retained.append(on) or True)
    trainer = Trainer(load_recipe(None, recipe_overrides(small_corpus, tmp_path / "run", **{"training.max_steps": 1})))
    for measure, names in (("attention_formula", ("fused kernel", "formula")),
                           ("packed_dropout", ("nn.Dropout", "packed")),
                           ("retained_memory", ("glibc's thresholds", "retained"))):
        choice = trainer.speed_choices[measure]
        assert set(choice.timings_ms) == set(names), measure
        assert choice.use == (choice.timings_ms[names[1]] < 0.95 * choice.timings_ms[names[0]])
    kernels = {m.kernel for m in trainer.model.modules() if isinstance(m, MultiHeadAttention)}
    assert kernels == {"reference" if trainer.speed_choices["attention_formula"].use else "fused"}
    dropouts = {type(m) for m in trainer.model.modules() if isinstance(m, torch.nn.Dropout)}
    assert dropouts == {Dropout if trainer.speed_choices["packed_dropout"].use else torch.nn.Dropout}
    # glibc's thresholds first, then a warm-up and 3 rounds — each off, (steps), off, on, (steps), off —
    # then the choice
    assert retained == [False, *[False, False, True, False] * 4, trainer.speed_choices["retained_memory"].use]


@pytest.mark.parametrize("wish", ["on", "off"])
def test_memory_retention_forced_either_way_is_applied_and_a_resume_applies_it_again(
        small_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wish: str) -> None:
    from transformerkit.training import speed_measures
    monkeypatch.setenv(MEMORY_OVERRIDE, wish)
    retained: list[bool] = []
    monkeypatch.setattr(speed_measures, "set_freed_memory_retained", lambda on: retained.append(on) or True)
    out = tmp_path / "run"
    Trainer(load_recipe(None, recipe_overrides(small_corpus, out, **{"training.max_steps": 1}))).train()
    resumed = Trainer(load_recipe(None, recipe_overrides(small_corpus, out, **{"training.max_steps": 2})), resume=True)
    assert retained == [False, wish == "on"] * 2
    assert resumed.speed_choices["retained_memory"].reason == f"{MEMORY_OVERRIDE}={wish}"


def test_both_attention_kernels_train_alike_and_a_resume_keeps_the_runs_kernel(
        small_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first_losses = {}
    for wish in ("on", "off"):
        monkeypatch.setenv(ATTENTION_OVERRIDE, wish)
        out = tmp_path / wish
        trainer = Trainer(load_recipe(None, recipe_overrides(small_corpus, out, **{"training.max_steps": 1,
                                                                                     "model.dropout": 0.0})))
        kernels = {m.kernel for m in trainer.model.modules() if isinstance(m, MultiHeadAttention)}
        assert kernels == {"reference" if wish == "on" else "fused"}
        assert "packed_dropout" not in trainer.speed_choices  # no dropout: nothing to measure
        trainer.train()
        first_losses[wish] = next(r["loss"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())
                                  if r["event"] == "train")
        assert json.loads((out / "model" / "config.json").read_text())["attention_kernel"] == "auto"
    assert first_losses["on"] == pytest.approx(first_losses["off"], rel=1e-5)
    monkeypatch.setenv(ATTENTION_OVERRIDE, "off")  # the run started on the formula, and stays on it
    resumed = Trainer(load_recipe(None, recipe_overrides(small_corpus, tmp_path / "on", **{"training.max_steps": 2,
                                                                                          "model.dropout": 0.0})),
                      resume=True)
    assert {m.kernel for m in resumed.model.modules() if isinstance(m, MultiHeadAttention)} == {"reference"}
    assert "kept" in resumed.speed_choices["attention_formula"].reason


@pytest.mark.parametrize("packed", [True, False])
def test_forced_dropout_draws_are_used_and_kept_on_resume(small_corpus: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, packed: bool) -> None:
    monkeypatch.setenv(DROPOUT_OVERRIDE, "on" if packed else "off")
    out = tmp_path / "run"
    Trainer(load_recipe(None, recipe_overrides(small_corpus, out, **{"training.max_steps": 1}))).train()
    monkeypatch.setenv(DROPOUT_OVERRIDE, "off" if packed else "on")
    resumed = Trainer(load_recipe(None, recipe_overrides(small_corpus, out, **{"training.max_steps": 2})), resume=True)
    dropouts = [type(m) for m in resumed.model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and set(dropouts) == {Dropout if packed else torch.nn.Dropout}
    assert resumed.speed_choices["packed_dropout"].use is packed
