"""Encoder-decoder models (translation, summarization) → Hugging Face ``transformers``.

The paper's post-norm layout with sinusoidal positions is ``MarianMTModel`` (Marian, the
OPUS-MT models); the pre-norm layout is ``PegasusForConditionalGeneration`` (pre-norm layers, a
final LayerNorm after each stack, sinusoidal positions, no embedding LayerNorm). Both compute

    h₀ = √d_model · E[ids] + PE(0 … n−1)      (√d_model only with ``scale_embeddings``)
    logits = h_N Eᵀ + final_logits_bias       (the bias is zero: we have none)

with the same layers as ours, so the weights map one to one, but for one detail that makes parity
fail silently: their sinusoid table puts the sines in the first half of the model dimensions and
the cosines in the second, where the paper (and we) interleave them, PE(pos, 2i) = sin and
PE(pos, 2i+1) = cos. A Transformer does not care in which order its model dimensions come as long
as every matrix that reads or writes the residual stream agrees, so the export permutes them,
:func:`residual_order`: dimension 2i → i, 2i+1 → d/2 + i, in the embeddings, in the input side of
every projection that reads the stream (q, k, v, the first feed-forward layer), in the output side
of every one that writes it (attention output, second feed-forward layer), and in every LayerNorm.

Other details: positions start at 0 on both sides; the decoder starts from our BOS
(``decoder_start_token_id``); ``forced_eos_token_id`` ends an output at the length limit with EOS,
as our search does. The tokenizer is exported with a post-processor that appends ``</s>`` to each
source, as :meth:`~transformerkit.inference.translation.Translator.encode_sources` does, so that
``AutoTokenizer`` + ``generate`` see the inputs we see. Greedy search and beam search with α = 0
give our outputs; with α > 0 theirs normalizes by length^α where ours uses GNMT's penalty, so
the same α ranks hypotheses alike but not always identically.
Options that neither class has (learned or rotary positions, separate vocabularies, a copy
mechanism, token types, explicit d_k/d_v, …) are named before anything is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, processors
from torch import Tensor

from transformerkit.checkpoint import CheckpointError, atomic_directory
from transformerkit.config import EncoderDecoderConfig
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.generation.config import GenerationConfig
from transformerkit.inference.translation import SOURCE_LIMIT
from transformerkit.interop.common import TO_HF_ACTIVATION, separate_projections, write_hf_tokenizer
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer

HF_CLASSES = {"post": ("marian", "MarianMTModel"), "pre": ("pegasus", "PegasusForConditionalGeneration")}
"""Our ``norm_position`` → (Hugging Face ``model_type``, architecture)."""
MAX_POSITIONS = 2 * SOURCE_LIMIT
"""Rows of the exported sinusoid tables: a source at our limit and its output fit."""


def export_blockers(config: EncoderDecoderConfig) -> list[str]:
    """The options of ``config`` that Marian and Pegasus cannot represent (empty: exportable)."""
    blockers = []
    if config.positional != "sinusoidal":
        blockers.append(f"positional={config.positional!r} (they have sinusoidal positions)")
    if not config.shared_vocab:
        blockers.append("tgt_vocab_size (separate vocabularies)")
    if not config.tie_embeddings:
        blockers.append("tie_embeddings=false (they tie the embeddings and the output projection)")
    if config.copy_attention:
        blockers.append("copy_attention (no pointer-generator output)")
    if config.type_vocab_size or config.embedding_norm:
        blockers.append("type_vocab_size / embedding_norm (a BERT-initialized model: token types, embedding LayerNorm)")
    if config.d_k is not None or config.d_v is not None:
        blockers.append("d_k / d_v (they use d_model / num_heads)")
    if not config.bias:
        blockers.append("bias=false (their projections have biases)")
    if config.layer_norm_eps != 1e-5:
        blockers.append(f"layer_norm_eps={config.layer_norm_eps} (theirs is 1e-5)")
    if config.activation not in TO_HF_ACTIVATION:
        blockers.append(f"activation={config.activation!r}")
    return blockers


def residual_order(d_model: int) -> Tensor:
    """The permutation of model dimensions from ours (sines and cosines interleaved) to theirs
    (sines, then cosines): ``theirs = ours[..., order]``."""
    return torch.cat([torch.arange(0, d_model, 2), torch.arange(1, d_model, 2)])


def sinusoid_table(rows: int, d_model: int) -> Tensor:
    """Marian's and Pegasus' position table: sin(pos / 10000^(2i/d)) in columns i < d/2, the
    cosines of the same angles after them (computed in float64, as theirs)."""
    angles = torch.arange(rows, dtype=torch.float64)[:, None] * 10000.0 ** (
        -torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def hf_config(config: EncoderDecoderConfig, generation: GenerationConfig) -> dict[str, Any]:
    model_type, architecture = HF_CLASSES[config.norm_position]
    return {
        "model_type": model_type, "architectures": [architecture], "vocab_size": config.vocab_size,
        "d_model": config.d_model, "encoder_layers": config.num_encoder_layers,
        "decoder_layers": config.num_decoder_layers, "encoder_attention_heads": config.num_heads,
        "decoder_attention_heads": config.num_heads, "encoder_ffn_dim": config.d_ff, "decoder_ffn_dim": config.d_ff,
        "activation_function": TO_HF_ACTIVATION[config.activation], "dropout": config.dropout,
        "attention_dropout": config.attention_dropout, "activation_dropout": 0.0,
        "max_position_embeddings": MAX_POSITIONS, "scale_embedding": config.scale_embeddings,
        "pad_token_id": config.pad_id, "bos_token_id": config.bos_id, "eos_token_id": config.eos_id,
        "decoder_start_token_id": config.bos_id, "forced_eos_token_id": config.eos_id,
        "tie_word_embeddings": True, "share_encoder_decoder_embeddings": True, "is_encoder_decoder": True,
        "num_beams": generation.beam,
    }


def hf_generation_config(config: EncoderDecoderConfig, generation: GenerationConfig) -> dict[str, Any]:
    """Our decoding defaults in Hugging Face's keys. Their beam search divides a score by
    length^α where ours multiplies by GNMT's ((5 + length) / 6)^−α: the same α ranks hypotheses
    alike but not always identically."""
    return {"decoder_start_token_id": config.bos_id, "bos_token_id": config.bos_id, "eos_token_id": config.eos_id,
            "pad_token_id": config.pad_id, "forced_eos_token_id": config.eos_id, "num_beams": generation.beam,
            "length_penalty": generation.length_penalty, "max_length": MAX_POSITIONS}


def state_to_hf(model: EncoderDecoderTransformer) -> dict[str, Tensor]:
    """The ``MarianMTModel`` / ``PegasusForConditionalGeneration`` state of ``model``, model
    dimensions in their order (:func:`residual_order`)."""
    config = model.config
    order = residual_order(config.d_model)
    ours = separate_projections(model.state_dict())  # qkv_proj → q_proj, k_proj, v_proj
    hf: dict[str, Tensor] = {}
    embedding = ours["src_embedding.tokens.embedding.weight"][:, order]
    positions = sinusoid_table(MAX_POSITIONS, config.d_model)
    hf |= {"model.shared.weight": embedding, "model.encoder.embed_tokens.weight": embedding,
           "model.decoder.embed_tokens.weight": embedding, "lm_head.weight": embedding,
           "model.encoder.embed_positions.weight": positions, "model.decoder.embed_positions.weight": positions,
           "final_logits_bias": torch.zeros(1, config.vocab_size)}
    parts = {"self_attention": "self_attn", "cross_attention": "encoder_attn",
             "self_attention_block.norm": "self_attn_layer_norm", "cross_attention_block.norm": "encoder_attn_layer_norm",
             "feed_forward.linear1": "fc1", "feed_forward.linear2": "fc2", "feed_forward_block.norm": "final_layer_norm"}
    for key, tensor in ours.items():
        stack, _, rest = key.partition(".layers.")
        if stack not in ("encoder", "decoder") or not rest:
            continue
        index, _, name = rest.partition(".")
        module, _, kind = name.rpartition(".")
        if module.startswith("cross_attention.") and module.endswith("kv_proj"):
            k, v = tensor.chunk(2)
            for part, value in (("k_proj", k), ("v_proj", v)):
                hf[f"model.{stack}.layers.{index}.encoder_attn.{part}.{kind}"] = reads_stream(value, kind, order)
            continue
        base, _, projection = module.rpartition(".")
        theirs = f"{parts[base]}.{projection}" if base in ("self_attention", "cross_attention") else parts[module]
        if projection in ("q_proj", "k_proj", "v_proj") or module.endswith("linear1"):
            value = reads_stream(tensor, kind, order)
        else:  # out_proj, linear2 and the norms write (or scale) the stream
            value = tensor[order]
        hf[f"model.{stack}.layers.{index}.{theirs}.{kind}"] = value
    if config.norm_position == "pre":
        for stack in ("encoder", "decoder"):
            for kind in ("weight", "bias"):
                hf[f"model.{stack}.layer_norm.{kind}"] = ours[f"{stack}.final_norm.{kind}"][order]
    return {k: v.detach().contiguous().clone() for k, v in hf.items()}


def reads_stream(tensor: Tensor, kind: str, order: Tensor) -> Tensor:
    """A projection that reads the residual stream: its weight's input columns reordered; its bias
    (an output-side vector) unchanged."""
    return tensor[:, order] if kind == "weight" else tensor


def seq2seq_tokenizer(tokenizer: SubwordTokenizer) -> SubwordTokenizer:
    """``tokenizer`` appending ``</s>`` to every text (a source as our translator encodes it)."""
    eos = tokenizer.tokens([tokenizer.eos_id])[0]
    copy = Tokenizer.from_str(tokenizer.tokenizer.to_str())
    copy.post_processor = processors.TemplateProcessing(single=f"$A {eos}", special_tokens=[(eos, tokenizer.eos_id)])
    return SubwordTokenizer(copy)


def save_hf_seq2seq(model: EncoderDecoderTransformer, directory: str | Path, tokenizer: SubwordTokenizer,
                    generation: GenerationConfig) -> None:
    """Write a directory that ``AutoModelForSeq2SeqLM`` and ``AutoTokenizer`` load, atomically; options they cannot represent raise
    :class:`CheckpointError` naming them, before anything is written."""
    config = model.config
    blockers = export_blockers(config)
    if blockers:
        raise CheckpointError(f"cannot export to Hugging Face ({'/'.join(HF_CLASSES[config.norm_position])}): "
                              + "; ".join(blockers))
    with atomic_directory(Path(directory)) as tmp:
        (tmp / "config.json").write_text(json.dumps(hf_config(config, generation), indent=2) + "\n", encoding="utf-8")
        (tmp / "generation_config.json").write_text(
            json.dumps(hf_generation_config(config, generation), indent=2) + "\n", encoding="utf-8")
        save_file(state_to_hf(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        write_hf_tokenizer(tmp, seq2seq_tokenizer(tokenizer), SOURCE_LIMIT)

