"""GPT-2 checkpoints in Hugging Face's layout ⇄ :class:`DecoderOnlyTransformer`.

Hugging Face's ``GPT2LMHeadModel`` names and shapes (d = n_embd, f = n_inner):

    transformer.wte.weight              (vocab, d)      → embedding.tokens.embedding.weight
    transformer.wpe.weight              (n_positions, d)→ embedding.positional.embedding.weight
    transformer.h.{i}.ln_1.{weight,bias}                → decoder.layers.{i}.self_attention_block.norm
    transformer.h.{i}.attn.c_attn.{weight (d, 3d), bias (3d)}
                                                        → self_attention.qkv_proj (transposed)
    transformer.h.{i}.attn.c_proj.{weight (d, d), bias} → self_attention.out_proj (transposed)
    transformer.h.{i}.ln_2.{weight,bias}                → decoder.layers.{i}.feed_forward_block.norm
    transformer.h.{i}.mlp.c_fc.{weight (d, f), bias}    → feed_forward.linear1 (transposed)
    transformer.h.{i}.mlp.c_proj.{weight (f, d), bias}  → feed_forward.linear2 (transposed)
    transformer.ln_f.{weight,bias}                      → decoder.final_norm
    lm_head.weight                      (vocab, d)      → tied to wte (optional in files)

GPT-2's ``Conv1D`` stores weights as (in, out), the transpose of ``nn.Linear``'s (out, in).
Checkpoints saved from ``GPT2Model`` lack the ``transformer.`` prefix; both are read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import Tensor

from transformerkit.checkpoint import CheckpointError, atomic_directory
from transformerkit.config import DecoderOnlyConfig
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.generation.config import GenerationConfig
from transformerkit.interop.common import (TO_HF_ACTIVATION, activation_from_hf, check_layout, check_state,
                                           drop_tied_output, read_hf_config, read_hf_weights, write_hf_tokenizer)
from transformerkit.models.decoder_only import DecoderOnlyTransformer

_BUFFERS = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers some old checkpoints carry


def config_from_hf(hf: dict[str, Any]) -> DecoderOnlyConfig:
    """A :class:`DecoderOnlyConfig` from a GPT-2 ``config.json``; unsupported options raise :class:`CheckpointError`."""
    if hf.get("model_type") != "gpt2":
        raise CheckpointError(f"not a GPT-2 config (model_type {hf.get('model_type')!r})")
    activation = activation_from_hf(hf.get("activation_function", "gelu_new"), "activation_function")
    for option, supported in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                              ("reorder_and_upcast_attn", False), ("add_cross_attention", False),
                              ("tie_word_embeddings", True)):
        if hf.get(option, supported) != supported:
            raise CheckpointError(f"unsupported GPT-2 option {option}={hf[option]!r}")
    d_model = hf.get("n_embd", 768)
    eos = hf.get("eos_token_id", 50256)
    eos = eos[0] if isinstance(eos, list) and eos else eos  # several EOS ids: the first (an empty list: refused below)
    bos = hf.get("bos_token_id", eos)
    pad = hf.get("pad_token_id")
    try:
        return DecoderOnlyConfig(
            vocab_size=hf.get("vocab_size", 50257), num_decoder_layers=hf.get("n_layer", 12),
            d_model=d_model, d_ff=hf.get("n_inner") or 4 * d_model, num_heads=hf.get("n_head", 12),
            dropout=float(hf.get("resid_pdrop", 0.1)), attention_dropout=float(hf.get("attn_pdrop", 0.1)),
            label_smoothing=0.0, positional="learned", max_positions=hf.get("n_positions", 1024),
            norm_position="pre", activation=activation,
            layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5), scale_embeddings=False, tie_embeddings=True,
            pad_id=pad if pad is not None else eos, bos_id=bos if bos is not None else eos, eos_id=eos)
    except ValueError as error:
        raise CheckpointError(f"GPT-2 config: {error}") from None


def config_to_hf(config: DecoderOnlyConfig) -> dict[str, Any]:
    """GPT-2 ``config.json`` values for a decoder-only config in GPT-2's layout (else :class:`CheckpointError`)."""
    check_layout(config, {"positional": "learned", "norm_position": "pre", "bias": True,
                          "scale_embeddings": False, "tie_embeddings": True}, "GPT-2")
    return {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": config.vocab_size,
        "n_positions": config.max_positions, "n_embd": config.d_model, "n_layer": config.num_decoder_layers,
        "n_head": config.num_heads, "n_inner": config.d_ff, "activation_function": TO_HF_ACTIVATION[config.activation],
        "resid_pdrop": config.dropout, "embd_pdrop": config.dropout, "attn_pdrop": config.attention_dropout,
        "layer_norm_epsilon": config.layer_norm_eps, "bos_token_id": config.bos_id, "eos_token_id": config.eos_id,
        "pad_token_id": config.pad_id, "tie_word_embeddings": True,
    }


def _layer_map(i: int) -> dict[str, str]:
    """HF key suffix → our key, for layer i, of the tensors that map one to one (LayerNorms)."""
    ours = f"decoder.layers.{i}"
    return {f"h.{i}.ln_1.{p}": f"{ours}.self_attention_block.norm.{p}" for p in ("weight", "bias")} | \
           {f"h.{i}.ln_2.{p}": f"{ours}.feed_forward_block.norm.{p}" for p in ("weight", "bias")}


def hf_generation_config(config: DecoderOnlyConfig, generation: GenerationConfig) -> dict[str, Any]:
    """Our sampling defaults in Hugging Face's ``generation_config.json`` keys (the same names and
    meanings: temperature, top-k (0: off), top-p, repetition penalty, new tokens)."""
    return {"do_sample": generation.do_sample, "temperature": generation.temperature, "top_k": generation.top_k,
            "top_p": generation.top_p, "repetition_penalty": generation.repetition_penalty,
            "max_new_tokens": generation.max_new_tokens, "bos_token_id": config.bos_id,
            "eos_token_id": config.eos_id, "pad_token_id": config.pad_id}


def expected_hf_shapes(config: DecoderOnlyConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a GPT-2 checkpoint of ``config`` holds (without the ``transformer.`` prefix)."""
    d, f = config.d_model, config.d_ff
    shapes: dict[str, tuple[int, ...]] = {"wte.weight": (config.vocab_size, d), "wpe.weight": (config.max_positions, d),
                                          "ln_f.weight": (d,), "ln_f.bias": (d,)}
    for i in range(config.num_decoder_layers):
        shapes |= {f"h.{i}.ln_1.weight": (d,), f"h.{i}.ln_1.bias": (d,), f"h.{i}.ln_2.weight": (d,),
                   f"h.{i}.ln_2.bias": (d,), f"h.{i}.attn.c_attn.weight": (d, 3 * d),
                   f"h.{i}.attn.c_attn.bias": (3 * d,), f"h.{i}.attn.c_proj.weight": (d, d),
                   f"h.{i}.attn.c_proj.bias": (d,), f"h.{i}.mlp.c_fc.weight": (d, f), f"h.{i}.mlp.c_fc.bias": (f,),
                   f"h.{i}.mlp.c_proj.weight": (f, d), f"h.{i}.mlp.c_proj.bias": (d,)}
    return shapes


def check_hf_state(state: dict[str, Tensor], config: DecoderOnlyConfig, source: str) -> dict[str, Tensor]:
    """Normalize keys (drop ``transformer.``, buffers, a tied ``lm_head``) and check them against ``config``.

    Missing, unexpected and mis-shaped tensors are reported together in one :class:`CheckpointError`.
    """
    normalized = {k.removeprefix("transformer."): v for k, v in state.items() if not k.endswith(_BUFFERS)}
    context = f"{source} does not fit a GPT-2 of this config"
    drop_tied_output(normalized, "lm_head.weight", "wte.weight", context)
    return check_state(normalized, expected_hf_shapes(config), context)


def state_from_hf(hf_state: dict[str, Tensor], config: DecoderOnlyConfig) -> dict[str, Tensor]:
    """Our state dict from a checked, normalized GPT-2 state (see :func:`check_hf_state`)."""
    state = {"embedding.tokens.embedding.weight": hf_state["wte.weight"],
             "embedding.positional.embedding.weight": hf_state["wpe.weight"],
             "decoder.final_norm.weight": hf_state["ln_f.weight"], "decoder.final_norm.bias": hf_state["ln_f.bias"]}
    for i in range(config.num_decoder_layers):
        state |= {ours: hf_state[theirs] for theirs, ours in _layer_map(i).items()}
        layer, attn, ff = f"decoder.layers.{i}", f"h.{i}.attn", f"h.{i}.mlp"
        for ours, theirs in (("self_attention.qkv_proj", f"{attn}.c_attn"), ("self_attention.out_proj", f"{attn}.c_proj"),
                             ("feed_forward.linear1", f"{ff}.c_fc"), ("feed_forward.linear2", f"{ff}.c_proj")):
            state[f"{layer}.{ours}.weight"] = hf_state[f"{theirs}.weight"].t()
            state[f"{layer}.{ours}.bias"] = hf_state[f"{theirs}.bias"]
    state["output_projection.weight"] = state["embedding.tokens.embedding.weight"]
    return {k: v.contiguous() for k, v in state.items()}


def state_to_hf(model: DecoderOnlyTransformer) -> dict[str, Tensor]:
    """GPT2LMHeadModel's state (``transformer.``-prefixed, Conv1D layout, ``lm_head`` left to tying)."""
    ours = model.state_dict()
    config = model.config
    hf = {"wte.weight": ours["embedding.tokens.embedding.weight"], "wpe.weight": ours["embedding.positional.embedding.weight"],
          "ln_f.weight": ours["decoder.final_norm.weight"], "ln_f.bias": ours["decoder.final_norm.bias"]}
    for i in range(config.num_decoder_layers):
        hf |= {theirs: ours[mine] for theirs, mine in _layer_map(i).items()}
        layer = f"decoder.layers.{i}"
        for mine, theirs in (("self_attention.qkv_proj", f"h.{i}.attn.c_attn"), ("self_attention.out_proj", f"h.{i}.attn.c_proj"),
                             ("feed_forward.linear1", f"h.{i}.mlp.c_fc"), ("feed_forward.linear2", f"h.{i}.mlp.c_proj")):
            hf[f"{theirs}.weight"] = ours[f"{layer}.{mine}.weight"].t()
            hf[f"{theirs}.bias"] = ours[f"{layer}.{mine}.bias"]
    return {f"transformer.{k}": v.detach().contiguous().clone() for k, v in hf.items()}


def load_hf_gpt2(directory: str | Path) -> DecoderOnlyTransformer:
    """A :class:`DecoderOnlyTransformer` (eval mode) with the weights of a Hugging Face GPT-2 directory."""
    directory = Path(directory)
    config = config_from_hf(read_hf_config(directory))
    state = check_hf_state(read_hf_weights(directory), config, str(directory))
    model = DecoderOnlyTransformer(config)
    model.load_state_dict(state_from_hf(state, config), strict=True)
    return model.eval()


def save_hf_gpt2(model: DecoderOnlyTransformer, directory: str | Path, tokenizer: SubwordTokenizer | None = None,
                 generation: GenerationConfig | None = None) -> None:
    """Write ``config.json`` + ``model.safetensors`` that ``GPT2LMHeadModel.from_pretrained`` loads
    (and ``tokenizer.json`` + ``tokenizer_config.json`` for ``AutoTokenizer``, and the decoding
    defaults ``generation`` as ``generation_config.json`` in Hugging Face's keys), atomically."""
    hf_config = config_to_hf(model.config)
    with atomic_directory(Path(directory)) as tmp:
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
        if generation is not None:
            (tmp / "generation_config.json").write_text(
                json.dumps(hf_generation_config(model.config, generation), indent=2) + "\n", encoding="utf-8")
        save_file(state_to_hf(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer is not None:
            write_hf_tokenizer(tmp, tokenizer, model.config.max_positions)
