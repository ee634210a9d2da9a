"""What every Hugging Face import shares: reading weight files safely and checking keys and shapes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from transformerkit.checkpoint import CheckpointError
from transformerkit.config import Activation, TransformerConfig
from transformerkit.data.tokenizer import SubwordTokenizer

_FROM_HF_ACTIVATION: dict[str, Activation] = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                                              "relu": "relu"}
TO_HF_ACTIVATION = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}


def activation_from_hf(name: str, key: str) -> Activation:
    """Our activation for a Hugging Face one (``gelu_new`` is the tanh approximation); else :class:`CheckpointError`."""
    if not isinstance(name, str) or name not in _FROM_HF_ACTIVATION:
        raise CheckpointError(f"unsupported {key} {name!r}; supported: {', '.join(_FROM_HF_ACTIVATION)}")
    return _FROM_HF_ACTIVATION[name]


def check_layout(config: TransformerConfig, layout: dict[str, object], family: str) -> None:
    """Raise :class:`CheckpointError` listing every field of ``config`` that differs from ``family``'s ``layout``."""
    wrong = [f"{k}={getattr(config, k)!r} ({family} needs {v!r})" for k, v in layout.items() if getattr(config, k) != v]
    if config.d_k is not None or config.d_v is not None:
        wrong.append(f"d_k/d_v set ({family} needs d_model / num_heads)")
    if wrong:
        raise CheckpointError(f"the model is not in {family}'s layout: " + "; ".join(wrong))


def read_hf_config(directory: Path) -> dict[str, Any]:
    """The values of a Hugging Face ``config.json``; a missing or invalid file raises :class:`CheckpointError`."""
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory}: no config.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: invalid JSON ({error.msg})") from None


def read_hf_weights(directory: Path) -> dict[str, Tensor]:
    """``model.safetensors``, else ``pytorch_model.bin`` loaded with ``weights_only=True`` (no arbitrary pickles)."""
    if (directory / "model.safetensors").is_file():
        try:
            return load_file(str(directory / "model.safetensors"))
        except SafetensorError as error:
            raise CheckpointError(f"{directory / 'model.safetensors'}: unreadable ({error})") from None
    if (directory / "pytorch_model.bin").is_file():
        try:
            return torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises UnpicklingError, RuntimeError, … for bad files
            raise CheckpointError(f"{directory / 'pytorch_model.bin'}: not loadable as plain weights ({error})") from None
    raise CheckpointError(f"{directory}: no model.safetensors or pytorch_model.bin")


def check_state(state: dict[str, Tensor], expected: dict[str, tuple[int, ...]], context: str) -> dict[str, Tensor]:
    """Return ``state`` if its keys and shapes are exactly ``expected``; otherwise raise one
    :class:`CheckpointError` that lists the missing, unexpected and mis-shaped tensors together."""
    problems = []
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [f"{k} {tuple(state[k].shape)} (expected {expected[k]})"
                 for k in sorted(set(expected) & set(state)) if tuple(state[k].shape) != expected[k]]
    if missing:
        problems.append(f"missing: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected: {', '.join(unexpected)}")
    if misshaped:
        problems.append(f"mis-shaped: {', '.join(misshaped)}")
    if problems:
        raise CheckpointError(f"{context} — " + "; ".join(problems))
    return state


def encoder_layer_pairs(num_layers: int, theirs: str, parts: dict[str, str]) -> dict[str, str]:
    """Hugging Face module name → ours for every layer of an encoder stack: ``parts`` maps each of
    our layer's modules (``self_attention.q_proj``, …, ``feed_forward_block.norm``) to the
    checkpoint's name inside layer ``{theirs}.{i}``."""
    return {f"{theirs}.{i}.{their_part}": f"encoder.layers.{i}.{our_part}"
            for i in range(num_layers) for our_part, their_part in parts.items()}


def weights_and_biases(modules: dict[str, str]) -> dict[str, str]:
    """Module name pairs → the pairs of their ``.weight`` and ``.bias`` tensors."""
    return {f"{theirs}.{kind}": f"{ours}.{kind}" for theirs, ours in modules.items() for kind in ("weight", "bias")}


def separate_projections(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with every self-attention ``qkv_proj`` split into ``q_proj``, ``k_proj``, ``v_proj``
    (equal widths, d_k = d_v, as in BERT): the layout of checkpoints that store them apart. Such a
    state loads back unchanged: :class:`~transformerkit.nn.attention.MultiHeadAttention` fuses them."""
    separate = {}
    for key, value in state.items():
        prefix, _, kind = key.rpartition(".qkv_proj.")
        if not _:
            separate[key] = value
            continue
        for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3)):
            separate[f"{prefix}.{name}.{kind}"] = part
    return separate


def drop_tied_output(state: dict[str, Tensor], output_key: str, embedding_key: str, context: str) -> None:
    """Remove a stored copy of a tied output matrix from ``state``; one that differs from the
    embedding matrix raises :class:`CheckpointError` (untied output layers are not supported)."""
    output = state.pop(output_key, None)
    embedding = state.get(embedding_key)
    if output is not None and embedding is not None and not torch.equal(output, embedding):
        raise CheckpointError(f"{context} — {output_key} differs from {embedding_key} "
                              "(untied output layers are not supported)")


def write_hf_tokenizer(directory: Path, tokenizer: SubwordTokenizer, max_length: int) -> None:
    """``tokenizer.json`` and a ``tokenizer_config.json`` with which ``AutoTokenizer`` loads it,
    naming every special token the tokenizer has (``pipeline("fill-mask")`` needs the mask token)."""
    tokenizer.save(directory / "tokenizer.json")
    roles = {"pad_token": tokenizer.pad_id, "bos_token": tokenizer.bos_id, "eos_token": tokenizer.eos_id}
    if tokenizer.unk_id is not None:
        roles["unk_token"] = tokenizer.unk_id
    for role, token in (("mask_token", "[MASK]"), ("cls_token", "[CLS]"), ("sep_token", "[SEP]")):  # BERT's
        if (token_id := tokenizer.tokenizer.token_to_id(token)) is not None:
            roles[role] = token_id
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_length,
              **{role: tokenizer.tokens([i])[0] for role, i in roles.items()}}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
