"""Speed against the peers, every figure a ratio measured in the same run on the same shapes.

    python benchmarks/run.py            # all rows (about 20 minutes on 2 CPU cores), writes BENCHMARKS.md
    python benchmarks/run.py --quick    # fewer shapes and repeats (a few minutes)

Each row times transformerkit and its peers interleaved (A B C A B C …) after a warm-up and
reports the median; weights are random (speed does not depend on their values). Peers:
``torch.nn.Transformer`` with the same embeddings and output projection, Hugging Face
``transformers`` (BART, GPT-2, BERT) configured to the same shapes, and on every row our own
model with every speed measure off ("transformerkit, plain PyTorch"), which no row may trail by
more than 5 %. Beside the speed, each row reports the working memory of one call of each
(the resident memory it adds at its peak: activations, gradients, caches), which may not exceed
1.5× plain PyTorch's.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and attention,
2 per multiply-add, forward and backward); the peaks are large fp32
(MKL and oneDNN) and bf16 products and a large read.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import interleaved_medians, working_memory  # noqa: E402

from transformerkit.backends.calibration import quantize_int8_where_fastest  # noqa: E402
from transformerkit.backends.calibration import use_decoding_layout_where_faster  # noqa: E402
from transformerkit.backends.layout import use_decoding_layout  # noqa: E402
from transformerkit.backends.machine import describe  # noqa: E402
from transformerkit.backends.onednn import use_onednn_products  # noqa: E402
from transformerkit.backends.quantization import quantize_linear_int8  # noqa: E402
from transformerkit.config import EncoderDecoderConfig, TextConfig, preset  # noqa: E402
from transformerkit.generation.config import GenerationConfig  # noqa: E402
from transformerkit.generation.decoders import CausalLMDecoder, Seq2SeqDecoder  # noqa: E402
from transformerkit.generation.sampling import TokenChooser, generate_tokens  # noqa: E402
from transformerkit.generation.search import beam_search  # noqa: E402
from transformerkit.memory import retain_freed_memory  # noqa: E402
from transformerkit.models.decoder_only import DecoderOnlyTransformer  # noqa: E402
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer  # noqa: E402
from transformerkit.models.common import TransformerModel  # noqa: E402
from transformerkit.training.speed_measures import choose_training_measures  # noqa: E402
from transformerkit.models.encoder_only import EncoderOnlyTransformer  # noqa: E402
from transformerkit.nn.dropout import use_packed_dropout  # noqa: E402
from transformerkit.nn.embedding import SinusoidalPositionalEncoding  # noqa: E402


PLAIN = "transformerkit, plain PyTorch"
"""The column of our model with every speed measure off (:func:`plain_pytorch`); its target 0.95×:
no row may be more than 5 % slower than it."""


@dataclass
class Row:
    name: str
    unit: str
    ours: float
    peers: dict[str, float]
    target: dict[str, float]
    """Wanted ratio ours / peer, by peer."""
    note: str = ""
    memory: dict[str, float | None] = field(default_factory=dict)
    """Working memory of one call (:func:`machine.working_memory`), bytes, by implementation."""

    def cells(self) -> list[str]:
        ratios = [f"{self.ours / v:.2f}× {name}" + (f" (target {self.target[name]:g}×)" if name in self.target else "")
                  for name, v in self.peers.items()]
        peers = ", ".join(f"{name} {v:,.1f}" for name, v in self.peers.items())
        return [self.name, f"{self.ours:,.1f} {self.unit}", peers, "; ".join(ratios), self.memory_cell(), self.note]

    def memory_cell(self) -> str:
        """Our working memory in MB, its ratio to plain PyTorch's (target ≤ 1.5×), the peers'."""
        ours, plain = self.memory.get("transformerkit"), self.memory.get(PLAIN)
        if ours is None:
            return "n/a"
        cell = f"{ours / 1e6:,.0f} MB"
        if plain:
            cell += f" = {ours / plain:.2f}× plain PyTorch (target ≤ 1.5×)"
        others = [f"{name} {value / 1e6:,.0f}" for name, value in self.memory.items()
                  if name not in ("transformerkit", PLAIN) and value is not None]
        return cell + (f"; {', '.join(others)}" if others else "")


@dataclass
class Peaks:
    """The machine's measured ceilings: matmul FLOP/s by kernel and precision, read bytes/s."""
    fp32_mkl: float
    fp32_onednn: float
    bf16: float
    bandwidth: float

    def matmul(self, precision: str) -> float:
        """The best measured matmul rate for a precision (fp32: the faster of MKL and oneDNN)."""
        return self.bf16 if precision == "bf16" else max(self.fp32_mkl, self.fp32_onednn)

    def training_note(self, flops: float, seconds: float, hf_seconds: float, precision: str) -> str:
        """Achieved FLOP/s, and how much of the step time that 2× HF allows (hf_seconds / 2) the
        matrix products alone would take at the measured peak (≥ 100 %: 2× is above the roofline)."""
        peak = self.matmul(precision)
        return (f"{flops / seconds / 1e9:.0f} GFLOP/s achieved = {flops / seconds / peak:.0%} of the {precision} "
                f"peak; products at peak = {flops / peak / (hf_seconds / 2):.0%} of the 2× HF step")


def plain_pytorch(model: TransformerModel) -> TransformerModel:
    """A copy of ``model`` with every transformerkit speed measure off: PyTorch's own attention
    kernel (``F.scaled_dot_product_attention`` as it is) and ``nn.Dropout``, products on
    ``nn.Linear``, weights as stored. The yardstick of the "plain PyTorch" column: no measure may
    make a row slower than this."""
    plain = copy.deepcopy(model)
    plain.set_attention_kernel("fused")
    use_packed_dropout(plain, False)  # the same p and mode; PyTorch's random numbers
    return plain


def as_trained(model: TransformerModel, precision: str, step: Callable[[nn.Module], None]
               ) -> tuple[TransformerModel, str]:
    """A copy of ``model`` with the speed measures the trainer would take here
    (:func:`~transformerkit.training.speed_measures.choose_training_measures`: each where its
    training step — ``step(model)``, forward and backward, in ``precision`` — is measured faster),
    and what was chosen."""
    ours = copy.deepcopy(model)
    shape = f"benchmark {type(model).__name__}, {sum(p.numel() for p in model.parameters()):,} parameters, {precision}"
    autocast = precision_context(precision)

    def forward_backward() -> None:
        with autocast():
            step(ours)
        ours.zero_grad(set_to_none=True)
    choices = choose_training_measures(ours, precision, shape, forward_backward)
    return ours, "; ".join(f"{name.replace('_', ' ')}: {'on' if c.use else 'off'}" for name, c in choices.items())


def precision_context(precision: str) -> Callable[[], object]:
    return (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else nullcontext


# ------------------------------------------------------------------------------------ peers
class TorchTransformerModel(nn.Module):
    """A translation model on ``torch.nn.Transformer``: the same scaled, tied embeddings, sinusoidal
    positions and output projection as transformerkit's, PyTorch's encoder and decoder in between."""

    def __init__(self, config: EncoderDecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_id)
        self.positions = SinusoidalPositionalEncoding(config.d_model)
        self.transformer = nn.Transformer(config.d_model, config.num_heads, config.num_encoder_layers,
                                          config.num_decoder_layers, config.d_ff, config.dropout,
                                          batch_first=True, norm_first=config.norm_position == "pre")
        self.output = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.output.weight = self.embedding.weight

    def embed(self, ids: Tensor) -> Tensor:
        positions = torch.arange(ids.shape[1])[None].expand_as(ids)
        return F.dropout(self.embedding(ids) * math.sqrt(self.config.d_model) + self.positions(positions),
                         self.config.dropout, self.training)

    def loss(self, src: Tensor, tgt_in: Tensor, tgt_out: Tensor) -> Tensor:
        causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.shape[1])
        hidden = self.transformer(self.embed(src), self.embed(tgt_in), tgt_mask=causal, tgt_is_causal=True,
                                  src_key_padding_mask=src == self.config.pad_id,
                                  memory_key_padding_mask=src == self.config.pad_id)
        return F.cross_entropy(self.output(hidden).flatten(0, 1), tgt_out.flatten(), ignore_index=self.config.pad_id,
                               label_smoothing=self.config.label_smoothing)


def hf_bart(config: EncoderDecoderConfig) -> nn.Module:
    from transformers import BartConfig, BartForConditionalGeneration
    return BartForConditionalGeneration(BartConfig(
        vocab_size=config.vocab_size, d_model=config.d_model, encoder_layers=config.num_encoder_layers,
        decoder_layers=config.num_decoder_layers, encoder_attention_heads=config.num_heads,
        decoder_attention_heads=config.num_heads, encoder_ffn_dim=config.d_ff, decoder_ffn_dim=config.d_ff,
        activation_function=config.activation, dropout=config.dropout, attention_dropout=0.0, activation_dropout=0.0,
        max_position_embeddings=1024, pad_token_id=config.pad_id, bos_token_id=config.bos_id,
        eos_token_id=config.eos_id, decoder_start_token_id=config.bos_id, forced_eos_token_id=None,
        scale_embedding=True, tie_word_embeddings=True))


# ------------------------------------------------------------------------------------ measuring
def training_step(model: nn.Module, loss: Callable[[], Tensor], precision: str) -> Callable[[], None]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)  # HF Trainer's default is fused too
    autocast = precision_context(precision)

    def step() -> None:
        with autocast():
            value = loss()
        value.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def smoothed_loss(logits: Tensor, targets: Tensor, config: TextConfig) -> Tensor:
    """The loss transformerkit trains with (label smoothing ε_ls), applied to a peer's logits: the same work."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=config.pad_id,
                           label_smoothing=config.label_smoothing)


def count_flops(run: Callable[[], None]) -> float:
    """FLOPs of one call, on plain products (the counter has no formula for oneDNN's op)."""
    counter = FlopCounterMode(display=False)
    with counter:
        run()
    return float(counter.get_total_flops())


def timed(candidates: dict[str, Callable[[], object]], repeats: int
          ) -> tuple[dict[str, float], dict[str, float | None]]:
    """Median seconds per call of each candidate (interleaved), then each one's working memory."""
    seconds = interleaved_medians(candidates, repeats)
    return seconds, {name: working_memory(run) for name, run in candidates.items()}


def seq2seq_training(shape: str, precision: str, batch: int, length: int, repeats: int,
                     peaks: Peaks) -> Row:
    config = preset(shape, vocab_size=8000) if shape == "small" else preset(shape)
    generator = torch.Generator().manual_seed(0)
    src = torch.randint(3, config.vocab_size, (batch, length), generator=generator)
    tgt = torch.randint(3, config.vocab_size, (batch, length + 1), generator=generator)
    tgt_in, tgt_out = tgt[:, :-1].contiguous(), tgt[:, 1:].contiguous()
    torch.manual_seed(0)
    model = EncoderDecoderTransformer(config).train()
    ours, chosen = as_trained(model, precision, lambda m: m.loss(src, tgt_in, tgt_out).backward())
    plain = plain_pytorch(model)
    torch_model = TorchTransformerModel(config).train()
    bart = hf_bart(config).train()
    plain_step = training_step(plain, lambda: plain.loss(src, tgt_in, tgt_out), precision)
    steps = {"transformerkit": training_step(ours, lambda: ours.loss(src, tgt_in, tgt_out), precision),
             "nn.Transformer": training_step(torch_model, lambda: torch_model.loss(src, tgt_in, tgt_out), precision),
             "HF BART": training_step(bart, lambda: smoothed_loss(bart(input_ids=src, decoder_input_ids=tgt_in).logits,
                                                                  tgt_out, config), precision),
             PLAIN: plain_step}
    seconds, memory = timed(steps, repeats)
    tokens = batch * length
    rate = {k: tokens / v for k, v in seconds.items()}
    note = peaks.training_note(count_flops(plain_step), seconds["transformerkit"],
                               seconds["HF BART"], precision) + f"; {chosen}"
    return Row(f"train enc-dec {shape} ({config.d_model}, {config.num_encoder_layers}+{config.num_decoder_layers}, "
               f"vocab {config.vocab_size}), {precision}, batch {batch}×{length}", "tgt tok/s",
               rate["transformerkit"], {k: v for k, v in rate.items() if k != "transformerkit"},
               {"nn.Transformer": 1.5, "HF BART": 2.0, PLAIN: 0.95}, note, memory=memory)


def decoder_training(precision: str, batch: int, length: int, repeats: int, peaks: Peaks) -> Row:
    from transformers import GPT2Config, GPT2LMHeadModel
    config = preset("gpt2", num_decoder_layers=6, d_model=512, d_ff=2048, num_heads=8, max_positions=length)
    ids = torch.randint(0, config.vocab_size, (batch, length + 1), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = DecoderOnlyTransformer(config).train()
    inputs, targets = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
    ours, chosen = as_trained(model, precision, lambda m: m.loss(inputs, targets).backward())
    plain = plain_pytorch(model)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=config.vocab_size, n_positions=length, n_embd=config.d_model,
                                    n_layer=config.num_decoder_layers, n_head=config.num_heads,
                                    n_inner=config.d_ff)).train()
    plain_step = training_step(plain, lambda: plain.loss(inputs, targets), precision)
    steps = {"transformerkit": training_step(ours, lambda: ours.loss(inputs, targets), precision),
             "HF GPT-2": training_step(hf, lambda: smoothed_loss(hf(inputs).logits, targets, config), precision),
             PLAIN: plain_step}
    seconds, memory = timed(steps, repeats)
    rate = {k: batch * length / v for k, v in seconds.items()}
    note = peaks.training_note(count_flops(plain_step), seconds["transformerkit"],
                               seconds["HF GPT-2"], precision) + f"; {chosen}"
    return Row(f"train decoder-only ({config.d_model}, {config.num_decoder_layers} layers, vocab {config.vocab_size}), "
               f"{precision}, batch {batch}×{length}", "tok/s", rate["transformerkit"],
               {k: v for k, v in rate.items() if k != "transformerkit"},
               {"HF GPT-2": 2.0, PLAIN: 0.95}, note, memory=memory)


def greedy_generation(batch: int, new_tokens: int, repeats: int, bandwidth: float) -> Row:
    import tempfile

    from transformers import GPT2LMHeadModel

    from transformerkit.interop.gpt2 import save_hf_gpt2
    torch.manual_seed(0)
    ours = DecoderOnlyTransformer(preset("gpt2")).eval()
    with tempfile.TemporaryDirectory() as tmp:
        save_hf_gpt2(ours, Path(tmp) / "hf")
        hf = GPT2LMHeadModel.from_pretrained(Path(tmp) / "hf").eval()
    prompt = torch.randint(0, 50000, (batch, 16), generator=torch.Generator().manual_seed(batch))
    mask = torch.ones_like(prompt, dtype=torch.bool)
    greedy = TokenChooser(GenerationConfig())

    def run(model: DecoderOnlyTransformer) -> Callable[[], None]:
        def generate() -> None:
            decoder = CausalLMDecoder(model, mask, 16 + new_tokens)
            with torch.inference_mode():
                list(generate_tokens(decoder, prompt, new_tokens, greedy, None, 50256))
        return generate

    def hf_run() -> None:
        with torch.inference_mode():
            hf.generate(prompt, attention_mask=mask.long(), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                        do_sample=False, pad_token_id=50256)

    loaded = copy.deepcopy(ours)
    layout = use_decoding_layout_where_faster(loaded, rows=(batch,))  # measured at this row's row count
    candidates = {"transformerkit": run(loaded), "HF generate": hf_run, PLAIN: run(plain_pytorch(ours)),
                  "transformerkit, blocked layout": run(use_decoding_layout(copy.deepcopy(ours)))}
    if batch == 1:  # the opt-in approximation: bf16 weights (`generate --dtype bf16`)
        in_bf16 = copy.deepcopy(ours).to(torch.bfloat16)
        use_decoding_layout_where_faster(in_bf16, rows=(batch,))
        candidates["transformerkit bf16 weights"] = run(in_bf16)
    seconds, memory = timed(candidates, repeats)
    rate = {k: batch * new_tokens / v for k, v in seconds.items()}
    weight_bytes = sum(p.numel() * p.element_size() for p in ours.parameters())
    traffic = weight_bytes * rate["transformerkit"] / batch  # the weights are read once per step
    return Row(f"greedy generation, GPT-2 124M shape, fp32, KV cache, batch {batch}, {new_tokens} new tokens",
               "tok/s", rate["transformerkit"], {k: v for k, v in rate.items() if k != "transformerkit"},
               {"HF generate": 2.5, PLAIN: 0.95} if batch == 1 else {PLAIN: 0.95},
               f"weights read at {traffic / 1e9:.1f} GB/s = {traffic / bandwidth:.0%} of measured bandwidth; "
               f"decoding layout: {'on' if layout.use else 'off'}, {layout.reason}", memory=memory)


def beam_generation(batch: int, new_tokens: int, repeats: int) -> Row:
    config = preset("base", vocab_size=8000, dropout=0.0)
    src = torch.randint(3, 8000, (batch, 32), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    plain = EncoderDecoderTransformer(config).eval()
    ours = copy.deepcopy(plain)
    layout = use_decoding_layout_where_faster(ours, rows=(4 * batch,))  # 4 beams × batch rows
    bart = hf_bart(config).eval()

    class NoEarlyEnd(Seq2SeqDecoder):
        """EOS only at the length limit (as HF's min_new_tokens): every sentence takes new_tokens steps."""

        def step(self, tokens: Tensor) -> Tensor:
            logits = super().step(tokens)
            logits[:, config.eos_id] = float("-inf")
            return logits

    def run(model: EncoderDecoderTransformer) -> Callable[[], None]:
        def search() -> None:
            decoder = NoEarlyEnd(model, src, copies=4, capacity=new_tokens)
            with torch.inference_mode():
                beam_search(decoder, [new_tokens] * batch, 4, config.bos_id, config.eos_id, 0.6)
        return search

    def hf_run() -> None:
        with torch.inference_mode():
            bart.generate(src, attention_mask=(src != 0).long(), num_beams=4, max_new_tokens=new_tokens,
                          min_new_tokens=new_tokens, do_sample=False, early_stopping=False)

    in_int8 = copy.deepcopy(plain)  # the opt-in approximation (`translate --dtype int8`), engine measured
    engine = quantize_int8_where_fastest(in_int8, rows=(4 * batch,))
    seconds, memory = timed({"transformerkit": run(ours), "HF BART generate": hf_run, PLAIN: run(plain_pytorch(plain)),
                             "transformerkit, blocked layout": run(use_decoding_layout(copy.deepcopy(plain))),
                             "transformerkit int8 weights": run(in_int8),
                             "transformerkit int8 weights on FBGEMM": run(quantize_linear_int8(copy.deepcopy(plain),
                                                                                                "x86"))},
                            repeats)
    rate = {k: batch / v for k, v in seconds.items()}
    return Row(f"beam search 4, batch {batch}, {new_tokens} new tokens, d512 6+6 vocab 8000, fp32", "sentences/s",
               rate["transformerkit"], {k: v for k, v in rate.items() if k != "transformerkit"},
               {"HF BART generate": 2.0, PLAIN: 0.95},
               f"decoding layout: {'on' if layout.use else 'off'}, {layout.reason}; int8 engine: "
               f"{'oneDNN' if engine.use else 'x86 (FBGEMM)'}, {engine.reason}", memory=memory)


def bert_forward(precision: str, batch: int, length: int, repeats: int) -> Row:
    from transformers import BertConfig, BertModel
    config = preset("bert-base", dropout=0.0, attention_dropout=0.0)
    ids = torch.randint(1, config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[batch // 2:, length // 2:] = False  # half the batch is padded to half length
    torch.manual_seed(0)
    ours = EncoderOnlyTransformer(config).eval()
    hf = BertModel(BertConfig(attn_implementation="sdpa")).eval()
    autocast = precision_context(precision)

    def ours_run() -> None:
        with torch.inference_mode(), autocast():
            ours(ids, mask)

    def hf_run() -> None:
        with torch.inference_mode(), autocast():
            hf(ids, attention_mask=mask.long())

    plain = plain_pytorch(ours)

    def plain_run() -> None:
        with torch.inference_mode(), autocast():
            plain(ids, mask)

    runs = {"transformerkit": ours_run, "HF BertModel": hf_run, PLAIN: plain_run}
    if precision == "fp32":
        onednn = use_onednn_products(copy.deepcopy(ours))

        def onednn_run() -> None:
            with torch.inference_mode():
                onednn(ids, mask)
        runs["transformerkit, oneDNN products"] = onednn_run
    seconds, memory = timed(runs, repeats)
    rate = {k: batch * length / v for k, v in seconds.items()}
    return Row(f"BERT-base encoder forward, {precision}, batch {batch}×{length}", "tok/s", rate["transformerkit"],
               {k: v for k, v in rate.items() if k != "transformerkit"}, {"HF BertModel": 1.3, PLAIN: 0.95},
               memory=memory)


def measure_peaks(size: int = 2048) -> Peaks:
    """fp32 ``torch.mm`` (MKL) and oneDNN, bf16 ``torch.mm`` (oneDNN) on size³ products; reading 256 MiB:
    the faster of a sum and a one-row product with it as a blocked weight (decoding's access)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a16, b16 = a.bfloat16(), b.bfloat16()
    seconds = interleaved_medians({"mkl": lambda: torch.mm(a, b),
                                   "onednn": lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], ""),
                                   "bf16": lambda: torch.mm(a16, b16)}, repeats=5)
    big = torch.ones(256 * 1024 * 1024 // 4)
    blocked = torch.ops.mkldnn._reorder_linear_weight(big.view(-1, 1024), 32)  # as generation/layout.py stores it
    row = torch.ones(1, 1024)
    read = interleaved_medians({"sum": lambda: big.sum(),
                                "product": lambda: torch.ops.mkldnn._linear_pointwise(row, blocked, None, "none", [],
                                                                                      "")}, repeats=5)
    flops = 2 * size ** 3
    return Peaks(flops / seconds["mkl"], flops / seconds["onednn"], flops / seconds["bf16"],
                 big.numel() * 4 / min(read.values()))


def markdown(rows: list[Row], machine: str, peaks: Peaks, seconds: float) -> str:
    lines = ["| row | transformerkit | peers | ratio | working memory of one call | notes |",
             "|---|---:|---|---|---|---|"]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return (f"Machine: {machine}.\n\nMeasured peaks (2048³ products): fp32 {peaks.fp32_mkl / 1e9:.0f} GFLOP/s "
            f"with `torch.mm` (MKL), {peaks.fp32_onednn / 1e9:.0f} GFLOP/s with oneDNN; bf16 {peaks.bf16 / 1e9:.0f} "
            f"GFLOP/s; memory read {peaks.bandwidth / 1e9:.1f} GB/s (256 MiB: the faster of a sum and a one-row "
            f"product with it as a blocked weight). Whole run: "
            f"{seconds / 60:.1f} min.\n\n" + "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes and repeats (a few minutes)")
    parser.add_argument("--out", default=None, help="write the table to this Markdown file (default: print only)")
    parser.add_argument("--malloc-default", action="store_true",
                        help="keep glibc's default malloc thresholds (see transformerkit/memory.py)")
    args = parser.parse_args()
    if not args.malloc_default:
        retain_freed_memory()  # as `transformerkit train` does where faster; peers share the process and the setting
    started = time.perf_counter()
    repeats = 3 if args.quick else 5
    machine = describe()
    peaks = measure_peaks()
    print(f"machine: {machine}\npeaks: {peaks}", flush=True)
    jobs: list[Callable[[], Row]] = [
        lambda: seq2seq_training("small", "fp32", 16, 64, repeats, peaks),
        lambda: seq2seq_training("small", "bf16", 16, 64, repeats, peaks),
        lambda: decoder_training("fp32", 8, 128, repeats, peaks),
        lambda: greedy_generation(1, 32 if args.quick else 64, repeats, peaks.bandwidth),
        lambda: greedy_generation(8, 32 if args.quick else 64, repeats, peaks.bandwidth),
        lambda: beam_generation(8, 16 if args.quick else 64, 1 if args.quick else 3),
        lambda: bert_forward("fp32", 8, 128, repeats),
    ]
    if not args.quick:
        jobs[2:2] = [lambda: seq2seq_training("base", "fp32", 16, 64, 3, peaks),
                     lambda: seq2seq_training("base", "bf16", 16, 64, 3, peaks)]
        jobs.insert(-1, lambda: decoder_training("bf16", 8, 128, repeats, peaks))
        jobs.append(lambda: bert_forward("bf16", 8, 128, repeats))
    rows = []
    for job in jobs:
        row = job()
        rows.append(row)
        print(" | ".join(row.cells()), flush=True)
    table = markdown(rows, machine, peaks, time.perf_counter() - started)
    print("\n" + table)
    if args.out:
        Path(args.out).write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
