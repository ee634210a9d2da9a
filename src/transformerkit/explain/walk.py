"""One forward pass of a real model on a real input, walked in the paper's order — tokens,
input embedding, positional encoding, each layer's attention, residual + LayerNorm and
feed-forward network, the output — with every number recomputed from the formula
(:mod:`.formulas`, float64) and checked against the model's own value (:mod:`.recording`).

The walk reads the parts every family shares (``InputEmbedding``, ``TransformerStack`` →
``TransformerLayer`` → ``MultiHeadAttention`` / ``ResidualNorm`` / ``PositionwiseFeedForward``);
what differs per family is where its tokens come from and what its output means, one function
each in :data:`FAMILY_WALKS`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import torch
from torch import Tensor

import transformerkit.explain.formulas as f
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.explain.language import Language, say
from transformerkit.explain.recording import Check, Checker, Recording, recording
from transformerkit.models.decoder_only import DecoderOnlyTransformer
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer
from transformerkit.models.encoder_only import EncoderOnlyTransformer
from transformerkit.models.families import Model
from transformerkit.models.vision import VisionTransformer
from transformerkit.nn.attention import MultiHeadAttention
from transformerkit.nn.embedding import InputEmbedding, LearnedPositionalEmbedding, SinusoidalPositionalEncoding
from transformerkit.nn.layers import ResidualNorm, TransformerLayer, TransformerStack

SHOWN_VALUES = 6
"""Values of a vector printed before “…”."""
TOP_K = 5
"""Candidates listed for a softmax output."""
OUTPUT_STEPS = 4
"""Decoder steps of a translation shown in the output section."""
MERGES_SHOWN = 12
"""BPE merges listed for the one word whose tokenization is shown."""


@dataclass
class Figure:
    """Attention weights of every head of one layer: ``weights`` (heads, queries, keys)."""

    caption: str
    weights: Tensor
    rows: list[str]
    columns: list[str]


@dataclass
class Step:
    title: str
    formulas: list[str] = field(default_factory=list)
    """Keys of :data:`~transformerkit.explain.language.FORMULAS`."""
    lines: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


@dataclass
class Explanation:
    title: str
    intro: list[str]
    steps: list[Step]
    checks: list[Check]
    language: Language


@dataclass(frozen=True)
class Focus:
    """Which part the walk details: one ``layer`` (None: every layer), one ``head``, one
    ``position`` (None: where the output is read — the last token of a decoder, the first of an encoder)."""

    layer: int | None = None
    head: int = 0
    position: int | None = None


def vector(values: Tensor, count: int = SHOWN_VALUES) -> str:
    """[v₀, v₁, …] ∈ ℝ^n: the first ``count`` values with 4 decimals."""
    shown = ", ".join(f"{v:.4f}" for v in values[:count].tolist())
    return f"[{shown}, …] ∈ ℝ^{len(values)}" if len(values) > count else f"[{shown}]"


def number(value: float | Tensor) -> str:
    return f"{float(value):.4f}"


def quoted(token: str) -> str:
    return f"“{token}”"


class Walk:
    """The shared parts of every family's walk: one recorded forward pass, a checker, the
    language, the focus."""

    def __init__(self, model: Model, record: Recording, language: Language, focus: Focus) -> None:
        self.model, self.config, self.record = model, model.config, record
        self.language = language
        self.say = partial(say, language)
        self.check = Checker()
        self.focus = focus
        if not 0 <= focus.head < model.config.num_heads:
            raise ValueError(f"--head must be in [0, {model.config.num_heads}), got {focus.head}")
        for name in ("encoder", "decoder"):
            stack = getattr(model, name, None)
            count = len(stack.layers) if isinstance(stack, TransformerStack) else 0
            if count and focus.layer is not None and not -count <= focus.layer < count:
                raise ValueError(f"--layer {focus.layer} is outside the {name}'s {count} layers (0 … {count - 1})")

    @contextmanager
    def recorded(self) -> Iterator[None]:
        """Run the block (the family's forward pass) with every module's calls recorded."""
        with recording(self.model) as record, torch.no_grad():
            yield
        self.record = record

    # ---------------------------------------------------------------------------- positions
    def position(self, length: int, default: int) -> int:
        """The position to detail in a sequence of ``length`` tokens (``--position``; negative from the end)."""
        wanted = self.focus.position
        if wanted is None:
            return default
        if not -length <= wanted < length:
            raise ValueError(f"--position {wanted} is outside the {length} tokens (0 … {length - 1})")
        return wanted % length

    # ---------------------------------------------------------------------------- tokens
    def tokenization(self, tokenizer: SubwordTokenizer, text: str, ids: list[int]) -> Step:
        step = Step(self.say("step_tokenization"))
        pieces = tokenizer.tokens(ids)
        step.lines.append(self.say("tok_text", text=text))
        step.lines.append(self.say("tok_pieces", n=len(ids),
                                   pieces=", ".join(f"{quoted(p)} → {i}" for p, i in zip(pieces, ids))))
        step.lines.extend(self.word_pieces(tokenizer, text))
        return step

    def word_pieces(self, tokenizer: SubwordTokenizer, text: str) -> list[str]:
        """How the tokenizer's model cut one word of ``text`` (the one cut into the most pieces),
        replayed from its merges (BPE) or its vocabulary (WordPiece) and checked against it."""
        backend = tokenizer.tokenizer
        spec = json.loads(backend.to_str())["model"]
        normalized = backend.normalizer.normalize_str(text) if backend.normalizer is not None else text
        words = ([w for w, _ in backend.pre_tokenizer.pre_tokenize_str(normalized)]
                 if backend.pre_tokenizer is not None else normalized.split())
        cut = {word: [t.value for t in backend.model.tokenize(word)] for word in words if word.strip()}
        if not cut:
            return []
        word = max(cut, key=lambda w: (len(cut[w]), len(w)))
        if spec["type"] == "BPE":
            if not spec.get("merges"):
                return [self.say("tok_characters")]
            merges, pieces = replay_bpe(word, spec)
            self.check.equal(f"BPE replay of {word!r}", pieces, cut[word])
            lines = [self.say("tok_bpe", word=quoted(word), chars=" ".join(quoted(c) for c in initial_symbols(
                word, spec)))]
            lines += [self.say("tok_merge", step=n, left=quoted(a), right=quoted(b), merged=quoted(m), rank=r + 1)
                      for n, (a, b, m, r) in enumerate(merges[:MERGES_SHOWN], 1)]
            if len(merges) > MERGES_SHOWN:
                lines.append(f"  … ({len(merges) - MERGES_SHOWN})")
            return lines + [self.say("tok_result", pieces=" ".join(quoted(p) for p in pieces))]
        if spec["type"] == "WordPiece":
            pieces = replay_wordpiece(word, spec)
            self.check.equal(f"WordPiece replay of {word!r}", pieces, cut[word])
            return [self.say("tok_wordpiece", word=quoted(word), pieces=" ".join(quoted(p) for p in pieces))]
        return []

    # ---------------------------------------------------------------------------- embeddings
    def embedding(self, embedding: InputEmbedding, ids: Tensor, tokens: list[str], pos: int, where: str,
                  call: int = 0) -> list[Step]:
        """Steps 2 and 3 for one input embedding: token rows, √d_model, positions (+ BERT's
        segments and LayerNorm). ids: (seq,). ``call``: which call of a shared token table."""
        config, record, say_ = self.config, self.record, self.say
        d_model, seq = config.d_model, len(ids)
        table = embedding.tokens.weight.detach().double()
        scale = embedding.tokens.scale
        rows = self.check("input embedding E[id]·scale", table[ids] * scale,
                          record.output(embedding.tokens, call))
        step = Step(say_("step_embedding", where=where),
                    ["embedding" if scale != 1.0 else "embedding_unscaled"])
        step.lines.append(say_("emb_lookup", vocab=table.shape[0], d_model=d_model, scale=number(scale))
                          if scale != 1.0 else say_("emb_lookup_unscaled", vocab=table.shape[0], d_model=d_model))
        token_id = int(ids[pos])
        step.lines.append(say_("emb_row", token=quoted(tokens[pos]), id=token_id, pos=pos, row=vector(table[token_id])))
        if scale != 1.0:
            step.lines.append(say_("emb_scaled", scale=number(scale), vec=vector(rows[pos])))
        step.lines.append(say_("emb_shape", seq=seq, d_model=d_model))

        positional = Step(say_("step_positional", where=where))
        positions = torch.arange(seq)
        x = rows
        if isinstance(embedding.positional, SinusoidalPositionalEncoding):
            table_pe = self.check("sinusoidal positional encoding", f.sinusoids(positions, d_model),
                                  record.output(embedding.positional))
            positional.formulas.append("sinusoidal")
            positional.lines.append(say_("pos_sinusoidal", pos=pos))
            for index in range(min(4, d_model)):
                positional.lines.append(say_("pos_value", pos=pos, index=index, two_i=index - index % 2,
                                             d_model=d_model, function="sin" if index % 2 == 0 else "cos",
                                             value=number(table_pe[pos, index])))
            positional.lines.append(say_("pos_vector", pos=pos, vec=vector(table_pe[pos])))
            x = x + table_pe
        elif isinstance(embedding.positional, LearnedPositionalEmbedding):
            table_p = embedding.positional.embedding.weight.detach().double()
            learned = self.check("learned positions P[pos]", table_p[positions], record.output(embedding.positional))
            positional.formulas.append("learned")
            positional.lines.append(say_("pos_learned", pos=pos, rows=table_p.shape[0], d_model=d_model,
                                         vec=vector(learned[pos])))
            x = x + learned
        else:
            angles = f.rotary_angles(torch.tensor([pos]), config.head_dim_k, config.rotary_base)[0]
            positional.formulas.append("rotary")
            positional.lines.append(say_("pos_rotary", pos=pos, angles=vector(angles, 4)))
        if embedding.segments is not None:
            segment = self.check("token-type vector S[0]", embedding.segments.weight.detach().double()[
                torch.zeros(seq, dtype=torch.long)], record.output(embedding.segments))
            x = x + segment
        if embedding.norm is not None:
            positional.lines.append(say_("pos_segments"))
            positional.formulas.append("layer_norm")
            x = f.layer_norm(x, embedding.norm.weight, embedding.norm.bias, embedding.norm.eps)
        x = self.check("input to the first layer x₀", x, record.output(embedding))
        positional.lines.append(say_("pos_sum", pos=pos, vec=vector(x[pos]), seq=seq, d_model=d_model))
        return [step, positional]

    # ---------------------------------------------------------------------------- layers
    def stack(self, stack: TransformerStack, stack_name: str, tokens: list[str], pos: int, causal: bool,
              memory_tokens: list[str] | None = None) -> list[Step]:
        """One step per layer of ``stack`` (“encoder”/“decoder”), every layer checked."""
        steps = []
        count = len(stack.layers)
        for index, layer in enumerate(stack.layers):
            assert isinstance(layer, TransformerLayer)
            shown = self.focus.layer is None or self.focus.layer % count == index
            steps.append(self.layer(layer, stack_name, index, count, tokens, pos, causal, memory_tokens, shown))
            if shown and not any(step.formulas for step in steps[:-1]):  # the formulas once per stack
                steps[-1].formulas = ["attention", "multihead", "layer_norm",
                                      "pre_norm" if layer.feed_forward_block.pre_norm else "post_norm", "ffn",
                                      "entropy"]
        if stack.final_norm is not None:
            last = self.record.output(stack.layers[-1])
            normed = self.check(f"{stack_name}: final LayerNorm", f.layer_norm(
                last.double(), stack.final_norm.weight, stack.final_norm.bias, stack.final_norm.eps),
                self.record.output(stack.final_norm))
            steps[-1].lines.append(self.say("final_norm", pos=pos, vec=vector(normed[pos])))
        return steps

    def layer(self, layer: TransformerLayer, stack_name: str, index: int, count: int, tokens: list[str], pos: int,
              causal: bool, memory_tokens: list[str] | None, shown: bool) -> Step:
        say_, record = self.say, self.record
        where = f"{stack_name} layer {index + 1}"
        step = Step(say_("step_layer", stack=say_(f"stack_{stack_name}"), index=index + 1, count=count))
        x = record.input(layer).double()
        lines: list[str] = []
        entropies: list[str] = []

        self_kind = "masked" if causal else "self"
        sublayers: list[tuple[str, MultiHeadAttention, ResidualNorm, list[str] | None]] = [
            (self_kind, layer.self_attention, layer.self_attention_block, None)]
        if layer.cross_attention is not None and layer.cross_attention_block is not None:
            sublayers.append(("cross", layer.cross_attention, layer.cross_attention_block, memory_tokens))
        for kind, attention, block, keys in sublayers:
            memory = record.keyword(layer, "memory").double() if kind == "cross" else None
            h = self.normalized_input(block, x, f"{where}: LayerNorm before {kind} attention")
            out, weights, detail = self.attention(attention, h, memory, tokens, keys or tokens, pos,
                                                  causal=kind == "masked", where=f"{where} {kind}-attention")
            x, norm_lines = self.residual(block, x, h, out, pos, f"{where}: residual + LayerNorm after {kind} attention")
            if shown:
                lines += [f"— {say_('part_' + kind)}", *detail, f"— {say_('part_norm')}", *norm_lines]
            step.figures.append(Figure(say_("figure_heads", stack=say_(f"stack_{stack_name}"), index=index + 1,
                                            kind=say_(f"kind_{kind}")),
                                       weights.float(), tokens, keys or tokens))
            entropy = f.entropy_bits(weights).mean(dim=-1)
            entropies.append(say_("entropy_row", kind=say_(f"kind_{kind}"),
                                  values="  ".join(f"h{h_}={float(e):.2f}" for h_, e in enumerate(entropy))))

        h = self.normalized_input(layer.feed_forward_block, x, f"{where}: LayerNorm before the feed-forward network")
        ffn_out, ffn_lines = self.feed_forward(layer, h, pos, where)
        x, norm_lines = self.residual(layer.feed_forward_block, x, h, ffn_out, pos,
                                      f"{where}: residual + LayerNorm after the feed-forward network")
        self.check(f"{where}: output", x, record.output(layer))
        if shown:
            lines += [f"— {say_('part_ffn')}", *ffn_lines, f"— {say_('part_norm')}", *norm_lines]
        else:
            lines.append(say_("layer_summary", index=index + 1, shown=(self.focus.layer or 0) % count + 1))
        step.lines = lines + [f"— {say_('part_entropy')}", say_("entropy_intro"), *entropies]
        return step

    def normalized_input(self, block: ResidualNorm, x: Tensor, what: str) -> Tensor:
        """What the sub-layer reads: LayerNorm(x) in pre-norm (checked), x in post-norm."""
        if not block.pre_norm:
            return x
        return self.check(what, f.layer_norm(x, block.norm.weight, block.norm.bias, block.norm.eps),
                          self.record.output(block.norm))

    def residual(self, block: ResidualNorm, x: Tensor, h: Tensor, out: Tensor, pos: int, what: str
                 ) -> tuple[Tensor, list[str]]:
        """x ← LayerNorm(x + out) (post-norm) or x + out (pre-norm), and the lines that explain it."""
        summed = x + out
        gamma, beta = block.norm.weight.detach().double(), block.norm.bias.detach().double()
        if block.pre_norm:
            mean, variance = x[pos].mean(), ((x[pos] - x[pos].mean()) ** 2).mean()
            return summed, [self.say("norm_pre", pos=pos, mean=number(mean), variance=number(variance),
                                     gamma=vector(gamma, 3), beta=vector(beta, 3), vec=vector(h[pos]),
                                     sum=vector(summed[pos]))]
        normed = self.check(what, f.layer_norm(summed, gamma, beta, block.norm.eps), self.record.output(block.norm))
        mean, variance = summed[pos].mean(), ((summed[pos] - summed[pos].mean()) ** 2).mean()
        return normed, [self.say("norm_post", pos=pos, mean=number(mean), variance=number(variance),
                                 gamma=vector(gamma, 3), beta=vector(beta, 3), vec=vector(normed[pos]))]

    def attention(self, attention: MultiHeadAttention, h: Tensor, memory: Tensor | None, tokens: list[str],
                  keys: list[str], pos: int, causal: bool, where: str) -> tuple[Tensor, Tensor, list[str]]:
        """Multi-head attention recomputed from its weights: (output (q, d_model), weights (heads, q, k), lines)."""
        say_, record, config = self.say, self.record, self.config
        heads, d_k, d_v = attention.num_heads, attention.d_k, attention.d_v
        widths = attention.widths
        if memory is None:
            projected = self.check(f"{where}: Q, K, V = X W", f.linear(h, attention.qkv_proj.weight,
                                                                       attention.qkv_proj.bias),
                                   record.output(attention.qkv_proj))
            q, k, v = projected.split(widths, dim=-1)
            weight_rows = attention.qkv_proj.weight.shape[0]
        else:
            q = self.check(f"{where}: Q = X W^Q", f.linear(h, attention.q_proj.weight, attention.q_proj.bias),
                           record.output(attention.q_proj))
            k, v = self.check(f"{where}: K, V = memory W", f.linear(memory, attention.kv_proj.weight,
                                                                    attention.kv_proj.bias),
                              record.output(attention.kv_proj)).split(widths[1:], dim=-1)
            weight_rows = attention.q_proj.weight.shape[0] + attention.kv_proj.weight.shape[0]
        q, k, v = (t.reshape(t.shape[0], heads, width).transpose(0, 1) for t, width in ((q, d_k), (k, d_k), (v, d_v)))
        if attention.rotary is not None:
            angles = f.rotary_angles(torch.arange(q.shape[1]), d_k, config.rotary_base)
            q, k = f.rotate(q, angles), f.rotate(k, angles)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d_k)
        visible = (torch.ones(q.shape[1], k.shape[1], dtype=torch.bool).tril() if causal
                   else torch.ones(q.shape[1], k.shape[1], dtype=torch.bool))
        weights = self.check(f"{where}: softmax(QKᵀ/√d_k)", f.softmax(scores.masked_fill(~visible, -math.inf)),
                             record.call(attention).output[1][0])
        per_head = weights @ v
        concat = self.check(f"{where}: Concat(head₁…head_h)", per_head.transpose(0, 1).reshape(q.shape[1], -1),
                            record.input(attention.out_proj))
        out = self.check(f"{where}: MultiHead = Concat · W^O", f.linear(concat, attention.out_proj.weight,
                                                                        attention.out_proj.bias),
                         record.output(attention))

        head = self.focus.head
        lines = [say_("att_projections" if memory is None else "att_projections_cross", head=head, heads=heads,
                      q_len=q.shape[1], k_len=k.shape[1], d_k=d_k, d_v=d_v, d_model=config.d_model, width=weight_rows)]
        lines.append(say_("att_query", pos=pos, token=quoted(tokens[pos]), vec=vector(q[head, pos])))
        lines.append(say_("att_scores", sqrt_dk=number(math.sqrt(d_k))))
        lines.append(say_("att_header"))
        row_scores, row_weights = scores[head, pos], weights[head, pos]
        for j, key in enumerate(keys):
            hidden = not bool(visible[pos, j])
            lines.append(say_("att_row", j=j, token=quoted(key)[:15], score="−∞" if hidden else number(row_scores[j]),
                              weight=number(row_weights[j])))
        if causal:
            later = [quoted(t) for t in keys[pos + 1:]]
            lines.append(say_("att_masked", count=len(later), tokens=" ".join(later)) if later
                         else say_("att_nothing_hidden"))
            lines.append(say_("att_mask_all", hidden=int((~visible).sum()), pairs=visible.numel()))
        top = row_weights.topk(min(3, len(keys)))
        lines.append(say_("att_top", top=", ".join(f"{quoted(keys[j])} {number(w)}"
                                                      for w, j in zip(top.values.tolist(), top.indices.tolist()))))
        lines.append(say_("att_head_output", d_v=d_v, vec=vector(per_head[head, pos])))
        lines.append(say_("att_concat", heads=heads, width=concat.shape[1], d_model=config.d_model,
                          vec=vector(out[pos])))
        if memory is not None:
            lines.append(say_("att_cross_reads"))
            mean = weights.mean(dim=0)
            for t, token in enumerate(tokens):
                best = int(mean[t].argmax())
                lines.append(say_("att_cross_row", target=quoted(token), source=quoted(keys[best]),
                                  weight=number(mean[t, best])))
        return out, weights, lines

    def feed_forward(self, layer: TransformerLayer, h: Tensor, pos: int, where: str) -> tuple[Tensor, list[str]]:
        """FFN(x) = act(x W₁ + b₁) W₂ + b₂ recomputed: (output (seq, d_model), lines)."""
        ffn, config = layer.feed_forward, self.config
        hidden = self.check(f"{where}: x W₁ + b₁", f.linear(h, ffn.linear1.weight, ffn.linear1.bias),
                            self.record.output(ffn.linear1))
        activated = self.check(f"{where}: {config.activation}(x W₁ + b₁)", f.ACTIVATIONS[config.activation](hidden),
                               self.record.input(ffn.linear2))
        out = self.check(f"{where}: FFN(x)", f.linear(activated, ffn.linear2.weight, ffn.linear2.bias),
                         self.record.output(ffn))
        lines = [self.say("ffn_hidden", pos=pos, d_ff=hidden.shape[1], hidden=vector(hidden[pos]),
                          activation=config.activation, activated=vector(activated[pos]))]
        if config.activation == "relu":
            lines.append(self.say("ffn_zero", share=percent((activated[pos] == 0).double().mean()),
                                  share_all=percent((activated == 0).double().mean()), d_ff=hidden.shape[1], pos=pos))
        else:
            lines.append(self.say("ffn_negative", share=percent((hidden[pos] < 0).double().mean()),
                                  share_all=percent((hidden < 0).double().mean()), d_ff=hidden.shape[1], pos=pos,
                                  activation=config.activation))
        lines.append(self.say("ffn_output", pos=pos, vec=vector(out[pos])))
        return out, lines

    # ---------------------------------------------------------------------------- output
    def top(self, probabilities: Tensor, names: Callable[[int], str]) -> list[str]:
        best = probabilities.topk(min(TOP_K, len(probabilities)))
        return [self.say("out_top", token=quoted(names(i)), probability=number(p))
                for p, i in zip(best.values.tolist(), best.indices.tolist())]


def percent(share: Tensor) -> str:
    return f"{100 * float(share):.1f}%"


def initial_symbols(word: str, spec: dict[str, Any]) -> list[str]:
    """A word's characters as BPE starts from them (with the model's subword prefix/suffix)."""
    prefix, suffix = spec.get("continuing_subword_prefix") or "", spec.get("end_of_word_suffix") or ""
    symbols = [c if i == 0 else prefix + c for i, c in enumerate(word)]
    if suffix:
        symbols[-1] += suffix
    return symbols


def replay_bpe(word: str, spec: dict[str, Any]) -> tuple[list[tuple[str, str, str, int]], list[str]]:
    """Byte-pair encoding of one pre-token from a ``tokenizer.json`` BPE model: repeatedly merge the
    adjacent pair with the lowest merge rank. → (merges as (left, right, merged, rank), pieces)."""
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in spec["merges"]]
    rank = {pair: i for i, pair in enumerate(merges)}
    prefix = spec.get("continuing_subword_prefix") or ""
    symbols = initial_symbols(word, spec)
    done = []
    while len(symbols) > 1:
        found = [(rank[pair], i) for i, pair in enumerate(zip(symbols, symbols[1:])) if pair in rank]
        if not found:
            break
        r, i = min(found)
        left, right = symbols[i], symbols[i + 1]
        merged = left + (right[len(prefix):] if prefix and right.startswith(prefix) else right)
        symbols[i:i + 2] = [merged]
        done.append((left, right, merged, r))
    vocab, unknown = spec.get("vocab", {}), spec.get("unk_token")
    pieces = [s if s in vocab or unknown is None else unknown for s in symbols]
    return done, pieces


def replay_wordpiece(word: str, spec: dict[str, Any]) -> list[str]:
    """WordPiece (BERT): the longest vocabulary entry that starts the rest of the word, repeatedly;
    pieces after the first carry the continuing prefix (``##``); a word that cannot be cut is unknown."""
    vocab, prefix = spec["vocab"], spec.get("continuing_subword_prefix", "##")
    if len(word) > spec.get("max_input_chars_per_word", 100):
        return [spec["unk_token"]]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start and (prefix if start else "") + word[start:end] not in vocab:
            end -= 1
        if end == start:
            return [spec["unk_token"]]
        pieces.append((prefix if start else "") + word[start:end])
        start = end
    return pieces


# -------------------------------------------------------------------------------------- families

def walk_translation(walk: Walk, model: EncoderDecoderTransformer, tokenizer: SubwordTokenizer, text: str,
                     source_ids: list[int], target_ids: list[int], translation: str, beam: int) -> list[Step]:
    """Encoder over the source, decoder over the translation teacher-forced (BOS + ids), the
    output distribution of the first decoder steps."""
    say_ = walk.say
    src = torch.tensor([source_ids])
    tgt_in = torch.tensor([[tokenizer.bos_id] + target_ids[:-1]])
    src_tokens, tgt_tokens = tokenizer.tokens(source_ids), tokenizer.tokens(tgt_in[0].tolist())
    with walk.recorded():
        src_mask = model.source_mask(src)
        memory, _ = model.encode(src, src_mask, need_weights=True)
        hidden, _ = model.decode(tgt_in, memory, src_mask, need_weights=True)
        model.output(hidden, memory, src_mask, src)
    record = walk.record
    src_pos = walk.position(len(source_ids), 0)
    tgt_pos = walk.position(len(tgt_tokens), len(tgt_tokens) - 1)
    tokens = walk.tokenization(tokenizer, text, source_ids)
    tokens.lines.append(say_("tok_target", pieces=" ".join(quoted(t) for t in tgt_tokens)))
    shared = model.tgt_embedding.tokens is model.src_embedding.tokens
    steps = [tokens, *walk.embedding(model.src_embedding, src[0], src_tokens, src_pos, say_("where_source")),
             *walk.stack(model.encoder, "encoder", src_tokens, src_pos, causal=False),
             *walk.embedding(model.tgt_embedding, tgt_in[0], tgt_tokens, tgt_pos, say_("where_target"),
                             call=1 if shared else 0),
             *walk.stack(model.decoder, "decoder", tgt_tokens, tgt_pos, causal=True, memory_tokens=src_tokens)]
    final = record.output(model.decoder).double()
    logits = walk.check("logits = h Eᵀ", f.linear(final, model.output_projection.weight, None),
                        record.output(model.output_projection))
    output = Step(say_("step_output"), ["output"],
                  [say_("out_translation", beam=beam, translation=translation)])
    probabilities = f.softmax(logits)
    for t in range(min(OUTPUT_STEPS, len(target_ids))):
        output.lines.append(say_("out_step", step=t + 1, prefix=" ".join(quoted(x) for x in tgt_tokens[:t + 1])))
        output.lines += walk.top(probabilities[t], lambda i: tokenizer.tokens([i])[0])
        chosen = target_ids[t]
        note = "" if int(probabilities[t].argmax()) == chosen else say_("out_not_greedy")
        output.lines.append(say_("out_chosen", token=quoted(tokenizer.tokens([chosen])[0]), note=note))
    if model.pointer is not None:
        output.lines.append(say_("out_copy"))
    return [*steps, output]


def walk_language_model(walk: Walk, model: DecoderOnlyTransformer, tokenizer: SubwordTokenizer, text: str,
                        ids: list[int]) -> list[Step]:
    """The decoder over the prompt and the next-token distribution at its last position."""
    tensor = torch.tensor([ids])
    tokens = tokenizer.tokens(ids)
    with walk.recorded():
        hidden, _ = model.hidden_states(tensor, need_weights=True)
        model.logits(hidden)
    record = walk.record
    pos = walk.position(len(ids), len(ids) - 1)
    steps = [walk.tokenization(tokenizer, text, ids), *walk.embedding(model.embedding, tensor[0], tokens, pos, ""),
             *walk.stack(model.decoder, "decoder", tokens, pos, causal=True)]
    final = record.output(model.decoder).double()
    logits = walk.check("logits = h Eᵀ", f.linear(final, model.output_projection.weight, None),
                        record.output(model.output_projection))
    output = Step(walk.say("step_output"), ["output"],
                  [walk.say("out_lm", vocab=logits.shape[1], token=quoted(tokens[-1]))])
    output.lines += walk.top(f.softmax(logits[-1]), lambda i: tokenizer.tokens([i])[0])
    return [*steps, output]


def walk_encoder(walk: Walk, model: EncoderOnlyTransformer, tokenizer: SubwordTokenizer, text: str,
                 ids: list[int]) -> list[Step]:
    """The encoder over ``[CLS] text [SEP]`` and what its head reads: class probabilities,
    masked-LM candidates, an answer span or the sentence embedding."""
    say_ = walk.say
    tensor = torch.tensor([ids])
    tokens = tokenizer.tokens(ids)
    mask = torch.ones_like(tensor, dtype=torch.bool)
    with walk.recorded():
        hidden, _ = model(tensor, attention_mask=mask, need_weights=True)
        pooled = model.pooled(hidden) if model.pooler is not None else None
        if model.classifier is not None and pooled is not None:
            model.classifier(pooled)
        if model.masked_lm_head is not None:
            model.masked_lm_head(hidden)
        embedding = EncoderOnlyTransformer.mean_pooled(hidden, mask)
    record = walk.record
    pos = walk.position(len(ids), 1 if len(ids) > 2 else 0)
    steps = [walk.tokenization(tokenizer, text, ids), *walk.embedding(model.embedding, tensor[0], tokens, pos, ""),
             *walk.stack(model.encoder, "encoder", tokens, pos, causal=False)]
    final = record.output(model.encoder).double()
    output = Step(say_("step_output"))
    if model.classifier is not None and model.pooler is not None:
        pooled_ = torch.tanh(walk.check("pooler W_p h₀ + b_p", f.linear(final[0], model.pooler.weight,
                                                                       model.pooler.bias), record.output(model.pooler)))
        linear = model.classifier[-1]
        logits = walk.check("classifier W_c pooled + b_c", f.linear(pooled_, linear.weight, linear.bias),
                            record.output(model.classifier))
        output.formulas.append("classifier")
        output.lines.append(say_("out_classes"))
        output.lines += walk.top(f.softmax(logits), lambda i: model.config.labels[i])
    elif model.masked_lm_head is not None:
        head = model.masked_lm_head
        dense = f.linear(final, head.dense.weight, head.dense.bias)
        logits = f.linear(f.layer_norm(f.ACTIVATIONS[model.config.activation](dense), head.norm.weight, head.norm.bias,
                                       head.norm.eps), head.projection.weight, head.bias)
        logits = walk.check("masked-LM head", logits, record.output(head))
        output.formulas.append("output")
        output.lines.append(say_("out_masked_lm", pos=pos, token=quoted(tokens[pos])))
        output.lines += walk.top(f.softmax(logits[pos]), lambda i: tokenizer.tokens([i])[0])
    else:
        mean = final.mean(dim=0)
        vec = walk.check("sentence embedding", mean / mean.norm(), embedding[0])
        output.formulas.append("mean_pooling")
        output.lines.append(say_("out_embedding", d_model=len(vec), vec=vector(vec)))
    return [*steps, output]


def walk_vision(walk: Walk, model: VisionTransformer, images: Tensor, name: str) -> list[Step]:
    """Patches of one normalized image (1, C, H, W), the encoder, the class probabilities."""
    say_, config = walk.say, model.config
    with walk.recorded():
        hidden, _ = model(images, need_weights=True)
        if model.classifier is not None:
            model.classifier(hidden[:, 0])
    record = walk.record
    count, patch, size = model.num_patches, config.patch_size, config.image_size
    pos = walk.position(count + 1, 0)
    per_row = size // patch
    cut = images[0].double().unfold(1, patch, patch).unfold(2, patch, patch)  # (C, rows, cols, P, P)
    flat = cut.permute(1, 2, 0, 3, 4).reshape(count, -1)  # raster order, each patch as (C, P, P)
    conv = model.patches.projection
    patches = walk.check("patch embedding W·patch + b", f.linear(flat, conv.weight.reshape(config.d_model, -1),
                                                                   conv.bias), record.output(model.patches))
    tokens = ["[class]"] + [f"p{i}" for i in range(count)]
    first = Step(say_("step_patches"), ["patches"])
    first.lines.append(say_("patch_text", name=name, channels=config.num_channels, size=size, count=count,
                            patch=patch))
    shown = max(pos, 1) - 1
    first.lines.append(say_("patch_value", index=shown, row=shown // per_row, column=shown % per_row,
                            width=flat.shape[1], vec=vector(patches[shown])))
    first.lines.append(say_("patch_class", count=count, seq=count + 1))
    sequence = torch.cat([model.class_token.detach().double()[0], patches])
    table = model.positions.embedding.weight.detach().double()
    learned = walk.check("learned positions P[pos]", table[torch.arange(count + 1)],
                         record.call(model.positions).output)  # called with positions (seq,): no batch
    x0 = walk.check("input to the first layer x₀", sequence + learned, record.output(model.dropout))
    positional = Step(say_("step_positional", where=""), ["learned"],
                      [say_("pos_learned", pos=pos, rows=table.shape[0], d_model=config.d_model,
                            vec=vector(learned[pos])),
                       say_("pos_sum", pos=pos, vec=vector(x0[pos]), seq=count + 1, d_model=config.d_model)])
    steps = [first, positional, *walk.stack(model.encoder, "encoder", tokens, pos, causal=False)]
    output = Step(say_("step_output"), ["classifier"])
    if model.classifier is not None:
        final = record.output(model.encoder).double()
        logits = walk.check("classifier W_c h₀ + b_c", f.linear(final[0], model.classifier.weight,
                                                              model.classifier.bias), record.output(model.classifier))
        output.lines.append(say_("out_vision"))
        output.lines += walk.top(f.softmax(logits), lambda i: config.labels[i])
    return [*steps, output]


def make_walk(model: Model, language: Language, focus: Focus) -> Walk:
    model.eval()
    model.set_attention_kernel("reference")  # the formula's kernel: it returns the weights it used
    return Walk(model, Recording(), language, focus)


def explanation(model: Model, walk: Walk, steps: list[Step], model_name: str, family: str) -> Explanation:
    """Title, the model's shape, the steps and the closing list of checks."""
    say_, c = walk.say, model.config
    checks = walk.check.checks
    worst = max((check.max_error for check in checks), default=0.0)
    used = max((check.allowance_used for check in checks), default=0.0)
    summary = Step(say_("step_checks"), lines=[say_("checks_intro", count=len(checks),
                                                    values=f"{sum(ch.elements for ch in checks):,}",
                                                    worst=f"{worst:.1e}", used=f"{100 * used:.0f}%")])
    summary.lines += [say_("check_row", what=check.what, error=f"{check.max_error:.1e}") for check in checks]
    intro = [say_("intro"), say_("shape", d_model=c.d_model, heads=c.num_heads, d_k=c.head_dim_k, d_v=c.head_dim_v,
                                 d_ff=c.d_ff, norm=say_(f"norm_{c.norm_position}_name"), activation=c.activation,
                                 positional=c.positional)]
    numbered = [replace(step, title=f"{n}. {step.title}") for n, step in enumerate([*steps, summary], 1)]
    return Explanation(say_("title", model=model_name, family=say_(f"family_{family}")), intro, numbered, checks,
                       walk.language)

