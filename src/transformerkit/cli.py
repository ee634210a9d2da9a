"""The ``transformerkit`` command line.

    transformerkit model-info --preset base [--vocab-size N] [--set key=value …] [--json]
    transformerkit info [--json]       (the machine and the speed choices measured on it)
    transformerkit data gettext --lang de --out DIR
    transformerkit data shakespeare --out DIR
    transformerkit data tweets --out DIR
    transformerkit data austen-cloze --out DIR
    transformerkit data debian-descriptions --out DIR
    transformerkit data fashion-mnist --out DIR
    transformerkit data mnist-5k --out DIR
    transformerkit train RECIPE.yaml [--set section.key=value …] [--resume]
    transformerkit translate --model DIR [--beam N] [--input FILE] [--output FILE]
    transformerkit summarize --model DIR [--beam N] [--input FILE] [--output FILE]
    transformerkit generate --model DIR --prompt TEXT [--max-new-tokens N] [--temperature T] …
    transformerkit convert IN_DIR OUT_DIR [--tokenizer DIR]   (Hugging Face GPT-2 / BERT ⇄ transformerkit)
    transformerkit export --model DIR --format hf|ctranslate2|onnx [--quantize int8] --out OUT
                                                (any model → transformers; translators → CTranslate2 too)
    transformerkit embed --model DIR [--input FILE] [--output FILE.jsonl|FILE.npy]
    transformerkit classify --model DIR [--input FILE]
    transformerkit answer --model DIR --question TEXT --context FILE [--json]
    transformerkit classify-image --model DIR FILE …
    transformerkit generate-images --model DIR --class N --count K --out grid.png [--temperature T] …
    transformerkit evaluate --model DIR --data TEST [--beam N]   (BLEU/chrF, ROUGE, QA EM/F1, image accuracy)
    transformerkit evaluate --model IMAGE_GENERATOR --data IMAGES [--classifier VIT_DIR]  (bits/pixel, consistency)
    transformerkit evaluate --lead-baseline WORDS --data TEST --source-field document --target-field summary
    transformerkit average-checkpoints --out DIR (--inputs DIR … | --run RUN --last N)
    transformerkit plot-attention --model DIR --text TEXT --out FILE.png
    transformerkit plot-attention --model VIT_DIR --image FILE … --out FILE.png [--method rollout|last-layer]
    transformerkit explain --model DIR (--text TEXT | --image FILE) [--lang en|zh] [--format text|markdown|html]
                                                (one forward pass step by step, every number checked)
    transformerkit serve --model DIR [--host 127.0.0.1] [--port 8000]   (HTTP API; pip install 'transformerkit[serve]')

Errors in what the user typed (unknown keys, bad values, unknown presets) end with one line on
stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import NoReturn, TextIO

import torch

from transformerkit.backends.calibration import OVERRIDES
from transformerkit.commands import UsageError
from transformerkit.config import PRESETS, preset
from transformerkit.data.sources import SOURCES
from transformerkit.explain import add_commands as add_explain_commands
from transformerkit.inference import inference_modules, task_function
from transformerkit.interop.ctranslate2 import QUANTIZATIONS
from transformerkit.interop.onnx import QUANTIZATIONS as ONNX_QUANTIZATIONS
from transformerkit.models.families import model_class_for
from transformerkit.serve import add_commands as add_serve_commands
from transformerkit.typed_config import apply_overrides


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def model_info(args: argparse.Namespace) -> int:
    config = preset(args.preset)
    overrides = apply_overrides({}, type(config), args.set)
    if args.vocab_size is not None:
        overrides["vocab_size"] = args.vocab_size
    config = config.replace(**overrides)
    with torch.device("meta"):  # shapes only: no memory for the weights, even for `big`
        model = model_class_for(config)(config)
    counts = model.parameter_counts()
    if args.json:
        print(json.dumps({"preset": args.preset, "config": config.to_dict(), "parameters": counts["total"],
                          "parameters_by_part": {k: v for k, v in counts.items() if k != "total"}}))
        return 0
    print(f"preset: {args.preset}")
    width = max(len(k) for k in config.to_dict())
    for key, value in config.to_dict().items():
        print(f"  {key:<{width}}  {value}")
    print("parameters:")
    for part, count in counts.items():
        print(f"  {part:<{width}}  {count:>13,}")
    return 0


def machine_info(args: argparse.Namespace) -> int:
    """The machine, the PyTorch build and the speed choices made on it (``backends/``)."""
    from transformerkit.backends.calibration import CACHE, cache_file, speed_choices
    from transformerkit.backends.machine import describe, isa_flags, processor
    from transformerkit.backends.onednn import ONEDNN_AVAILABLE

    report = {"machine": describe(), "processor": processor(), "isa": isa_flags(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "onednn": ONEDNN_AVAILABLE, "cuda": torch.cuda.is_available(),
              "overrides": {name: os.environ[name] for name in (*OVERRIDES.values(), CACHE) if name in os.environ},
              "speed_choices_file": str(cache_file()), "speed_choices": speed_choices()}
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return 0
    print(f"machine: {report['machine']}\noneDNN: {'yes' if ONEDNN_AVAILABLE else 'no'}; "
          f"overrides: {report['overrides'] or 'none'}\nspeed choices ({report['speed_choices_file']}):")
    for measure, choice in report["speed_choices"].items():
        picked = (("bf16" if choice["use"] else "fp32") if measure.startswith(("training precision", "inference dtype"))
                  else ("on" if choice["use"] else "off"))
        print(f"  {measure}: {picked} — {choice['reason']}")
    if not report["speed_choices"]:
        print("  none measured yet (training and decoding measure what they need)")
    return 0


def build_data(args: argparse.Namespace) -> int:
    source = SOURCES[args.source]
    print(json.dumps(source.build(args), indent=2, ensure_ascii=False))
    print(f"wrote {source.writes} to {args.out}", file=sys.stderr)
    return 0


def train(args: argparse.Namespace) -> int:
    from transformerkit.tasks import load_recipe
    from transformerkit.training.model_card import write_model_card
    from transformerkit.training.trainer import Trainer

    run = load_recipe(args.recipe, args.set)
    trainer = Trainer(run, resume=args.resume)
    result = trainer.train()
    trainer.dist.shutdown()
    if not trainer.dist.is_main:  # rank 0 reports and scores the test set
        return 0
    print(f"training stopped after {result.steps} steps ({result.stopped_because}); "
          f"model written to {result.model_dir}", file=sys.stderr)
    if result.stopped_because == "interrupted":
        print(f"resume with: transformerkit train {result.output_dir / 'run.yaml'} --resume", file=sys.stderr)
        return 130
    scores = trainer.task.test_scores(result.model_dir, trainer.autocast)
    if scores is not None:
        (result.output_dir / "results.json").write_text(json.dumps(scores, indent=2) + "\n", encoding="utf-8")
        print(json.dumps(scores))
    write_model_card(result.model_dir, run.to_dict(), result.steps, result.stopped_because, scores)
    return 0


def convert(args: argparse.Namespace) -> int:
    from transformerkit.interop.convert import convert_model_dir

    print(convert_model_dir(Path(args.input), Path(args.output), args.tokenizer), file=sys.stderr)
    return 0


def export(args: argparse.Namespace) -> int:
    from transformerkit.interop.convert import export_model_dir

    print(export_model_dir(Path(args.model), Path(args.out), engine=args.format, quantize=args.quantize),
          file=sys.stderr)
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """Score with the ``evaluate`` of the model's task module (the lead baseline: summarization's)."""
    from transformerkit.inference import summarization

    if (args.model is None) == (args.lead_baseline is None):
        raise UsageError("give either --model DIR or --lead-baseline WORDS")
    scorer = task_function(args.model, "evaluate") if args.model else summarization.evaluate
    print(json.dumps(scorer(args)))
    return 0


def average(args: argparse.Namespace) -> int:
    from transformerkit.checkpoint import average_checkpoints

    if bool(args.inputs) == bool(args.run):
        raise UsageError("give either --inputs DIR … or --run RUN_DIR")
    inputs = [Path(p) for p in args.inputs] if args.inputs else \
        sorted((Path(args.run) / "checkpoints").glob("step-*"))[-args.last:]
    average_checkpoints(inputs, Path(args.out))
    print(f"averaged {len(inputs)} checkpoints into {args.out}", file=sys.stderr)
    return 0


def plot_attention(args: argparse.Namespace) -> int:
    if (args.text is None) == (not args.image):
        raise UsageError("give --text (a translation model) or --image FILE … (a vision model)")
    print(task_function(args.model, "plot_attention")(args), file=sys.stderr)
    return 0


DESCRIPTION = """transformerkit: the Transformer ("Attention Is All You Need") from its parts up.
Train a recipe, then translate, summarize, generate, embed, classify, answer or serve with the
model directory it writes."""

EXAMPLES = """examples:
  transformerkit train configs/en-de-cpu.yaml                     train en→de (15 min on 2 CPU cores)
  transformerkit translate --model runs/en-de/model < input.en    one translation per line
  transformerkit generate --model runs/shakespeare-char/model --prompt ROMEO.
  transformerkit serve --model runs/en-de/model --port 8000       an HTTP API (pip install 'transformerkit[serve]')
  transformerkit info                                             the machine and the speed choices made on it

`transformerkit VERB --help` describes each verb."""


def _version() -> str:
    try:
        return version("transformerkit")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="transformerkit", description=DESCRIPTION, epilog=EXAMPLES,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"transformerkit {_version()}")
    parser.add_argument("--speed", action="append", default=[], metavar="MEASURE=on|off|auto",
                        help=f"take a speed measure or not, instead of measuring it on this machine (repeatable; "
                             f"before the verb): {', '.join(OVERRIDES)}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    info = commands.add_parser("model-info", help="print a configuration and its exact parameter count")
    info.add_argument("--preset", default="base", help=f"one of: {', '.join(PRESETS)} (default: base)")
    info.add_argument("--vocab-size", type=int, default=None, help="vocabulary size (shared source/target)")
    info.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a configuration field, e.g. --set d_k=32 (repeatable)")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(handler=model_info)

    machine = commands.add_parser("info", help="the machine, the PyTorch build and the speed choices measured on it")
    machine.add_argument("--json", action="store_true", help="print one JSON object")
    machine.set_defaults(handler=machine_info)

    data = commands.add_parser("data", help="build a corpus")
    sources = data.add_subparsers(dest="source", required=True, parser_class=_Parser, help="the corpus to build")
    for name, source in SOURCES.items():
        command = sources.add_parser(name, help=source.help)
        command.add_argument("--out", "--output", dest="out", required=True, help=f"directory for {source.writes}")
        for flags, settings in source.options:
            command.add_argument(*flags, **settings)
        command.set_defaults(handler=build_data)

    trainer = commands.add_parser("train", help="train a model from a YAML recipe")
    trainer.add_argument("recipe", help="YAML recipe (see configs/)")
    trainer.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override a recipe value, e.g. --set training.max_minutes=5 (repeatable)")
    trainer.add_argument("--resume", action="store_true", help="continue the run in training.output_dir")
    trainer.set_defaults(handler=train)

    for module in inference_modules():  # each task's own verbs
        if hasattr(module, "add_commands"):
            module.add_commands(commands)
    add_serve_commands(commands)
    add_explain_commands(commands)

    converter = commands.add_parser("convert", help="import a Hugging Face GPT-2, BERT or ViT directory, or export one")
    converter.add_argument("input", help="Hugging Face directory (import) or transformerkit model directory (export)")
    converter.add_argument("output", help="directory to write")
    converter.add_argument("--tokenizer", default=None,
                           help="directory with tokenizer.json or GPT-2's vocabulary files (default: the input's)")
    converter.set_defaults(handler=convert)

    exporter = commands.add_parser("export", help="write a model in another engine's format: hf (transformers: "
                                   "GPT-2, BERT, ViT, and encoder-decoders as MarianMT / Pegasus), ctranslate2 "
                                   "(encoder-decoders, GPT-2 and BERT layouts), onnx (ONNX Runtime: encoders, ViT, "
                                   "decoder-only with a key/value cache)")
    exporter.add_argument("--model", required=True, help="transformerkit model directory")
    exporter.add_argument("--format", choices=["hf", "ctranslate2", "onnx"], default="hf",
                          help="hf: Hugging Face transformers (default); ctranslate2: CTranslate2; onnx: ONNX")
    exporter.add_argument("--quantize", choices=list(dict.fromkeys(QUANTIZATIONS + ONNX_QUANTIZATIONS)),
                          default="float32", help="weight type of a CTranslate2 or ONNX export (default: float32; "
                          "ONNX: float32 or int8)")
    exporter.add_argument("--out", "--output", dest="out", required=True,
                          help="directory to write (replaced atomically)")
    exporter.set_defaults(handler=export)

    evaluator = commands.add_parser("evaluate", help="score a model on a test set, as JSON: translation BLEU and chrF "
                                    "(sacreBLEU), summarization ROUGE-1/2/L (rouge-score), QA EM and F1 (SQuAD v1.1), "
                                    "image accuracy, image generators' bits per pixel")
    evaluator.add_argument("--model", default=None, help="model directory")
    evaluator.add_argument("--data", required=True, help="test pairs (TSV, JSONL, CSV, or source file with "
                           "--data-target); SQuAD JSON for a QA model; an image source for images")
    evaluator.add_argument("--data-target", default=None, help="reference file aligned with --data")
    evaluator.add_argument("--source-field", default="source", help="JSONL/CSV field of the input (e.g. document)")
    evaluator.add_argument("--target-field", default="target", help="JSONL/CSV field of the reference (e.g. summary)")
    evaluator.add_argument("--beam", type=int, default=None, help="beam size (default: the model's)")
    evaluator.add_argument("--hypotheses", default=None, help="also write the outputs to this file")
    evaluator.add_argument("--classifier", default=None, help="image generation: a ViT directory that measures "
                           "class consistency (the share of samples classified as their conditioning class)")
    evaluator.add_argument("--samples-per-class", type=int, default=100, help="image generation: samples per class "
                           "for --classifier")
    evaluator.add_argument("--test-percent", type=float, default=10.0, help="images: share of a source without a "
                           "test split scored (the same hash split as training)")
    evaluator.add_argument("--seed", type=int, default=1, help="image generation: sampling seed")
    evaluator.add_argument("--lead-baseline", type=int, default=None, metavar="WORDS",
                           help="instead of a model, score the lead baseline: each document's first sentence cut "
                                "to WORDS words, with ROUGE")
    evaluator.set_defaults(handler=evaluate)

    averager = commands.add_parser("average-checkpoints", help="average the weights of checkpoints")
    averager.add_argument("--inputs", nargs="+", default=None, help="model/checkpoint directories")
    averager.add_argument("--run", default=None, help="a training output directory")
    averager.add_argument("--last", type=int, default=5, help="with --run: how many of the last checkpoints")
    averager.add_argument("--out", "--output", dest="out", required=True, help="directory for the averaged model")
    averager.set_defaults(handler=average)

    plotter = commands.add_parser("plot-attention", help="draw a translation's cross-attention, or a ViT's "
                                  "class-token attention over images, as a PNG")
    plotter.add_argument("--model", required=True, help="model directory")
    plotter.add_argument("--text", default=None, help="source sentence (translation models)")
    plotter.add_argument("--image", nargs="+", default=[], help="image files (vision models)")
    plotter.add_argument("--method", choices=["rollout", "last-layer"], default="rollout",
                         help="images: attention rollout through all layers, or the last layer's")
    plotter.add_argument("--translation", default=None, help="the translation to explain (default: translate)")
    plotter.add_argument("--beam", type=int, default=None, help="beam size for translating")
    plotter.add_argument("--out", "--output", dest="out", required=True, help="PNG file to write")
    plotter.set_defaults(handler=plot_attention)
    return parser


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      file: TextIO | None = None, line: str | None = None) -> None:
    print(f"transformerkit: warning: {message}", file=sys.stderr)


def _override_speed_measures(wishes: list[str]) -> None:
    """``--speed NAME=VALUE``: set the measure's environment variable (every verb, and the
    processes a distributed run starts, read it there)."""
    for wish in wishes:
        name, _, value = wish.partition("=")
        if name not in OVERRIDES or value not in ("on", "off", "auto"):
            raise UsageError(f"--speed takes MEASURE=on|off|auto with a measure among {', '.join(OVERRIDES)}, "
                             f"got {wish!r}")
        os.environ[OVERRIDES[name]] = value


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _override_speed_measures(args.speed)
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning  # what the library warns of (inputs cut, …): one line on stderr
            status = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return status
    except BrokenPipeError:  # the reader went away (`… | head -1`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 141  # 128 + SIGPIPE: what a shell reports for a tool the closed pipe stopped
    except (UsageError, ValueError, RuntimeError, OSError) as error:
        where = f" (rank {os.environ['RANK']})" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
        print(f"transformerkit: error{where}: {error}", file=sys.stderr)
        return 2
