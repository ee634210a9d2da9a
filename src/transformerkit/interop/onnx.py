"""Models → ONNX (``transformerkit export --format onnx``), to run on ONNX Runtime, optionally
with int8 weights (ONNX Runtime's dynamic quantization).

``torch.onnx.export`` (its ``torch.export`` path) traces one of the graphs below, with the batch
and sequence lengths left dynamic; the names of inputs and outputs are Hugging Face's (those of
``optimum``'s exports), so code written for those runs these:

    encoder-only   input_ids, attention_mask, token_type_ids*  (batch, seq) int64
                   → last_hidden_state (batch, seq, d), pooler_output* (batch, d), logits* (batch, labels),
                     start_logits*, end_logits* (batch, seq), prediction_logits* (batch, seq, vocab)
    vision         pixel_values (batch, channels, size, size) float
                   → last_hidden_state (batch, 1 + patches, d), logits* (batch, labels)
    decoder-only   input_ids (batch, new), attention_mask (batch, past + new),
                   past_key_values.{i}.key / .value (batch, heads, past, d_k)
                   → logits (batch, new, vocab), present.{i}.key / .value (batch, heads, past + new, d_k)

(* where the model has that part.) The decoder-only graph is one decoding step with a key/value
cache: the first call passes empty caches (past = 0) and the prompt, each later call the new token
and the ``present`` caches of the call before (:class:`OnnxLanguageModel` does this). The caches
enter the model through :class:`ConcatenatedCache`, so the graph is the model's own forward pass.

The export directory holds ``model.onnx``, the tokenizer (``tokenizer.json``) or image processor
(``preprocessor_config.json``) and ``generation_config.json``.
"""

from __future__ import annotations

import importlib
import json
import logging
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from transformerkit.checkpoint import Preprocessor, atomic_directory, preprocessor_file
from transformerkit.generation.config import GenerationConfig
from transformerkit.models.decoder_only import DecoderOnlyTransformer
from transformerkit.models.encoder_only import EncoderOnlyTransformer
from transformerkit.models.families import Model
from transformerkit.models.vision import VisionTransformer
from transformerkit.nn.kv_cache import DecoderCache, LayerCache

ONNX_FILE = "model.onnx"
QUANTIZATIONS = ("float32", "int8")
"""Weight types of an ONNX export (int8: ONNX Runtime's ``quantize_dynamic``, activations quantized per call)."""


def onnx_runtime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ValueError("running ONNX models needs ONNX Runtime: pip install onnxruntime") from None
    return onnxruntime


class ConcatenatedCache:
    """A :class:`~transformerkit.nn.kv_cache.KVCache` over keys and values given as tensors
    (graph inputs): :meth:`append` concatenates, so the grown tensors are the graph's outputs.
    keys (batch, heads, past, d_k), values (batch, heads, past, d_v)."""

    def __init__(self, keys: Tensor, values: Tensor) -> None:
        self.keys, self.values = keys, values

    @property
    def length(self) -> int:
        return self.keys.shape[2]

    def append(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        self.keys = torch.cat([self.keys, keys], dim=2)
        self.values = torch.cat([self.values, values], dim=2)
        return self.keys, self.values


class ModelGraph(nn.Module):
    """A module whose forward pass is what an ONNX file computes with ``model``."""

    def __init__(self, model: Model) -> None:
        super().__init__()
        self.model = model


class DecoderStep(ModelGraph):
    """One decoding step of a decoder-only model with its caches as inputs and outputs (the graph
    of the module docstring)."""

    model: DecoderOnlyTransformer

    def forward(self, input_ids: Tensor, attention_mask: Tensor, *past: Tensor) -> tuple[Tensor, ...]:
        caches = [ConcatenatedCache(keys, values) for keys, values in zip(past[::2], past[1::2])]
        cache = DecoderCache([LayerCache(c) for c in caches])  # type: ignore[arg-type]
        hidden, _ = self.model.hidden_states(input_ids, attention_mask.bool(), cache)
        return self.model.logits(hidden), *(t for c in caches for t in (c.keys, c.values))


class EncoderGraph(ModelGraph):
    """An encoder-only model's hidden states and the outputs of each head it has."""

    model: EncoderOnlyTransformer

    @property
    def output_names(self) -> list[str]:
        m = self.model
        return ["last_hidden_state", *(["pooler_output"] if m.pooler is not None else []),
                *(["logits"] if m.classifier is not None else []),
                *(["start_logits", "end_logits"] if m.span_head is not None else []),
                *(["prediction_logits"] if m.masked_lm_head is not None else [])]

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None
                ) -> tuple[Tensor, ...]:
        m = self.model
        hidden, _ = m(input_ids, attention_mask, token_type_ids)
        outputs = [hidden]
        if m.pooler is not None:
            outputs.append(m.pooled(hidden))
        if m.classifier is not None:
            outputs.append(m.classifier(m.pooled(hidden)))
        if m.span_head is not None:
            outputs += m.span_head(hidden).unbind(dim=-1)
        if m.masked_lm_head is not None:
            outputs.append(m.masked_lm_head(hidden))
        return tuple(outputs)


class VisionGraph(ModelGraph):
    """A ViT's hidden states and, with a classifier, its logits."""

    model: VisionTransformer

    @property
    def output_names(self) -> list[str]:
        return ["last_hidden_state", *(["logits"] if self.model.config.labels else [])]

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, ...]:
        hidden, _ = self.model(pixel_values)
        return (hidden, self.model.classifier(hidden[:, 0])) if self.model.config.labels else (hidden,)


def _traced(model: Model) -> tuple[nn.Module, tuple[Any, ...], list[str], list[str], tuple[Any, ...]]:
    """The graph module of ``model``, example inputs, input and output names, dynamic shapes."""
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    if isinstance(model, DecoderOnlyTransformer):
        c = model.config
        past_names = [f"past_key_values.{i}.{kind}" for i in range(c.num_decoder_layers) for kind in ("key", "value")]
        heads, d_k = c.num_heads, c.d_k or c.d_model // c.num_heads
        d_v = c.d_v or c.d_model // c.num_heads
        past = tuple(torch.zeros(2, heads, 2, d_k if name.endswith("key") else d_v) for name in past_names)
        cached = torch.export.Dim("past", min=0)
        return (DecoderStep(model), (torch.ones(2, 3, dtype=torch.long), torch.ones(2, 5, dtype=torch.long), *past),
                ["input_ids", "attention_mask", *past_names],
                ["logits", *(name.replace("past_key_values", "present") for name in past_names)],
                ({0: batch, 1: seq}, {0: batch, 1: torch.export.Dim.AUTO}, tuple({0: batch, 2: cached} for _ in past)))
    if isinstance(model, EncoderOnlyTransformer):
        graph = EncoderGraph(model)
        ids = torch.ones(2, 8, dtype=torch.long)
        inputs: tuple[Tensor, ...] = (ids, torch.ones_like(ids))
        if model.config.type_vocab_size:
            inputs += (torch.zeros_like(ids),)
        names = ["input_ids", "attention_mask", "token_type_ids"][:len(inputs)]
        return graph, inputs, names, graph.output_names, tuple({0: batch, 1: seq} for _ in inputs)
    if isinstance(model, VisionTransformer):
        c = model.config
        graph = VisionGraph(model)
        return (graph, (torch.zeros(2, c.num_channels, c.image_size, c.image_size),), ["pixel_values"],
                graph.output_names, ({0: batch},))
    raise ValueError(f"a {model.model_type} model has no ONNX export (encoder-only, vision and decoder-only models do)")


def save_onnx(model: Model, directory: str | Path, preprocessor: Preprocessor, generation: GenerationConfig,
              quantization: str = "float32") -> None:
    """Write ``model`` (cast to float32 in place) as ``model.onnx`` (weights as ``quantization``)
    with its tokenizer or image processor and decoding defaults into ``directory``, atomically."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"--quantize for ONNX must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    if quantization == "int8":
        onnx_runtime()
    try:
        importlib.import_module("onnxscript")  # torch.onnx's exporter translates with it
    except ImportError:
        raise ValueError("exporting to ONNX needs its packages: pip install onnx onnxscript") from None
    graph, inputs, input_names, output_names, dynamic_shapes = _traced(model.float())
    graph.eval()
    large = sum(p.numel() for p in model.parameters()) * 4 > 1_500_000_000  # protobuf's 2 GB limit
    with tempfile.TemporaryDirectory() as scratch, atomic_directory(Path(directory)) as tmp:
        target = Path(scratch) / ONNX_FILE if quantization == "int8" else tmp / ONNX_FILE
        exporter_log = logging.getLogger("torch.onnx")
        level = exporter_log.level
        exporter_log.setLevel(logging.ERROR)  # its notes on optional operator libraries (torchvision)
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", (FutureWarning, UserWarning))  # torch.export's internal notes
                torch.onnx.export(graph, inputs, str(target), dynamo=True, verbose=False, external_data=large,
                                  input_names=input_names, output_names=output_names,
                                  dynamic_shapes=dynamic_shapes)
        finally:
            exporter_log.setLevel(level)
        if quantization == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(target, tmp / ONNX_FILE, weight_type=QuantType.QInt8, use_external_data_format=large)
        preprocessor.save(tmp / preprocessor_file(preprocessor))
        (tmp / "generation_config.json").write_text(json.dumps(asdict(generation), indent=2) + "\n",
                                                    encoding="utf-8")


class OnnxLanguageModel:
    """A decoder-only export on ONNX Runtime: next-token logits with the key/value cache carried
    from call to call, and greedy decoding (the loop of :mod:`transformerkit.generation` at its
    simplest: no sampling, no penalties), e.g. to compare engines."""

    def __init__(self, directory: str | Path, threads: int | None = None) -> None:
        ort = onnx_runtime()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        path = Path(directory) / ONNX_FILE
        if not path.is_file():
            raise ValueError(f"{directory}: no {ONNX_FILE} (write one with transformerkit export --format onnx)")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.past = [i for i in self.session.get_inputs() if i.name.startswith("past_key_values.")]
        if not self.past:
            raise ValueError(f"{path} is not a decoder-only export (no past_key_values inputs)")

    def step(self, ids: Tensor, attention_mask: Tensor, past: list[Tensor] | None) -> tuple[Tensor, list[Tensor]]:
        """ids (batch, new), attention_mask (batch, past + new), past: the caches of the last call
        (None: none yet) → logits (batch, new, vocab) and the caches to pass next."""
        if past is None:
            past = [torch.zeros(ids.shape[0], i.shape[1], 0, i.shape[3]) for i in self.past]
        feed = {"input_ids": ids.numpy(), "attention_mask": attention_mask.long().numpy(),
                **{i.name: t.numpy() for i, t in zip(self.past, past)}}
        logits, *present = self.session.run(None, feed)
        return torch.from_numpy(logits), [torch.from_numpy(t) for t in present]

    def greedy(self, ids: Tensor, attention_mask: Tensor, max_new_tokens: int, eos_id: int | None = None) -> Tensor:
        """Greedy continuations (batch, ≤ max_new_tokens) of left-padded prompts ids (batch, seq);
        a row that has produced ``eos_id`` goes on with it."""
        logits, past = self.step(ids, attention_mask, None)
        done = torch.zeros(ids.shape[0], dtype=torch.bool)
        out = []
        for _ in range(max_new_tokens):
            token = logits[:, -1].argmax(-1)
            if eos_id is not None:
                token = token.masked_fill(done, eos_id)
                done |= token == eos_id
            out.append(token)
            if eos_id is not None and bool(done.all()):
                break
            attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
            logits, past = self.step(token[:, None], attention_mask, past)
        return torch.stack(out, dim=1)
