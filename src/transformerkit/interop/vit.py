"""ViT checkpoints in Hugging Face's layout ⇄ :class:`VisionTransformer`.

Hugging Face ``ViTForImageClassification`` names, as every checkpoint on the Hub stores them
(``vit.`` prefix; ``ViTModel`` checkpoints have none; all ``nn.Linear``, so no transposes):

    embeddings.cls_token                         (1, 1, d)      → class_token
    embeddings.position_embeddings               (1, 1 + N, d)  → positions.embedding.weight (1 + N, d)
    embeddings.patch_embeddings.projection       Conv2d         → patches.projection
    encoder.layer.{i}.attention.attention.{query,key,value}     → encoder.layers.{i}.self_attention.qkv_proj (stacked)
    encoder.layer.{i}.attention.output.dense                    → encoder.layers.{i}.self_attention.out_proj
    encoder.layer.{i}.layernorm_before                          → encoder.layers.{i}.self_attention_block.norm
    encoder.layer.{i}.intermediate.dense                        → encoder.layers.{i}.feed_forward.linear1
    encoder.layer.{i}.output.dense                              → encoder.layers.{i}.feed_forward.linear2
    encoder.layer.{i}.layernorm_after                           → encoder.layers.{i}.feed_forward_block.norm
    layernorm                                                   → encoder.final_norm
    classifier                                                  → classifier  (labels from id2label)

Hugging Face's image pipelines convert every picture to RGB, so a grayscale (1-channel) model is
exported as a 3-channel one: its patch projection split over R, G, B by the ITU-R 601-2 luma
weights with which PIL turns RGB into grayscale (0.299, 0.587, 0.114; they sum to 1), its mean and
std repeated. A gray picture (R = G = B) then gives exactly the 1-channel model's output, and a
colour one what the model gives its grayscale version (up to PIL's rounding to 8 bits).
``config.json`` says so (``"transformerkit_grayscale": true``), and the import folds the three
channels back into one (their sum: the original weights up to float rounding).

``transformers`` 5 names the layers ``layers.{i}.attention.{q,k,v,o}_proj`` and ``layers.{i}.mlp.{fc1,fc2}``
in memory and converts the names above when loading; imports read either, exports write the
names above (which ``transformers`` 4 and 5 both load).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from transformerkit.checkpoint import CheckpointError, atomic_directory
from transformerkit.config import VisionConfig
from transformerkit.data.image_processing import PREPROCESSOR_CONFIG, ImageProcessor
from transformerkit.interop.common import (TO_HF_ACTIVATION, activation_from_hf, check_layout, check_state,
                                           encoder_layer_pairs, read_hf_config, read_hf_weights, separate_projections,
                                           weights_and_biases)
from transformerkit.models.vision import VisionTransformer

_IGNORED = ("embeddings.mask_token",  # ViTForMaskedImageModeling's
            "pooler.")  # ViTModel's optional pooler: no classifier reads it
_POSITIONS = "embeddings.position_embeddings"
_PATCHES = "embeddings.patch_embeddings.projection.weight"
LUMA = (0.299, 0.587, 0.114)
"""ITU-R 601-2 luma weights of R, G, B: PIL's ``convert("L")``."""
GRAYSCALE = "transformerkit_grayscale"
"""The key of an export's ``config.json`` that marks a grayscale model exported with 3 channels."""
# transformers 5's in-memory names → the checkpoint names above (the first match applies)
_NEW_NAMES = [(re.compile(rf"^layers\.(\d+)\.{theirs}\."), rf"encoder.layer.\1.{ours}.") for theirs, ours in (
    ("attention.q_proj", "attention.attention.query"), ("attention.k_proj", "attention.attention.key"),
    ("attention.v_proj", "attention.attention.value"), ("attention.o_proj", "attention.output.dense"),
    ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense"), ("(layernorm_before|layernorm_after)", "\\2"))]


def checkpoint_name(key: str) -> str:
    """A ViT tensor name without ``vit.`` and in the Hub's layout (transformers 5 names converted)."""
    key = key.removeprefix("vit.")
    for pattern, replacement in _NEW_NAMES:
        key, count = pattern.subn(replacement, key, count=1)
        if count:
            break
    return key


def config_from_hf(hf: dict[str, Any], labels: int) -> VisionConfig:
    """A :class:`VisionConfig` from a ViT ``config.json`` with a ``labels``-way classifier (0: none);
    unsupported options raise :class:`CheckpointError`."""
    if hf.get("model_type") != "vit":
        raise CheckpointError(f"not a ViT config (model_type {hf.get('model_type')!r})")
    if not hf.get("qkv_bias", True):
        raise CheckpointError("unsupported qkv_bias = false (query/key/value projections without bias)")
    names = hf.get("id2label") or {}
    try:
        return VisionConfig(
            num_encoder_layers=hf.get("num_hidden_layers", 12),
            d_model=hf.get("hidden_size", 768), d_ff=hf.get("intermediate_size", 3072),
            num_heads=hf.get("num_attention_heads", 12), dropout=float(hf.get("hidden_dropout_prob", 0.0)),
            attention_dropout=float(hf.get("attention_probs_dropout_prob", 0.0)), label_smoothing=0.0,
            positional="learned", norm_position="pre",
            activation=activation_from_hf(hf.get("hidden_act", "gelu"), "hidden_act"),
            layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
            image_size=hf.get("image_size", 224), patch_size=hf.get("patch_size", 16),
            num_channels=1 if hf.get(GRAYSCALE) is True else hf.get("num_channels", 3),
            labels=[str(names.get(str(i), names.get(i, f"LABEL_{i}"))) for i in range(labels)])
    except ValueError as error:
        raise CheckpointError(f"ViT config: {error}") from None


def config_to_hf(config: VisionConfig) -> dict[str, Any]:
    """The ``config.json`` of the export (grayscale models become 3-channel ones, see above)."""
    check_layout(config, {"positional": "learned", "norm_position": "pre", "bias": True}, "ViT")
    labels = ({"id2label": dict(enumerate(config.labels)), "label2id": {n: i for i, n in enumerate(config.labels)}}
              if config.labels else {})
    return {
        "model_type": "vit", "architectures": ["ViTForImageClassification" if config.labels else "ViTModel"],
        "hidden_size": config.d_model, "num_hidden_layers": config.num_encoder_layers,
        "num_attention_heads": config.num_heads, "intermediate_size": config.d_ff,
        "hidden_act": TO_HF_ACTIVATION[config.activation], "hidden_dropout_prob": config.dropout,
        "attention_probs_dropout_prob": config.attention_dropout, "layer_norm_eps": config.layer_norm_eps,
        "image_size": config.image_size, "patch_size": config.patch_size,
        "num_channels": 3 if config.num_channels == 1 else config.num_channels,
        "qkv_bias": True, "encoder_stride": config.patch_size, **labels,
        **({GRAYSCALE: True} if config.num_channels == 1 else {}),
    }


def key_map(config: VisionConfig) -> dict[str, str]:
    """Hugging Face key (checkpoint layout, without ``vit.``) → our key, for every tensor."""
    names = {"embeddings.cls_token": "class_token", _POSITIONS: "positions.embedding.weight"}
    pairs = {"embeddings.patch_embeddings.projection": "patches.projection", "layernorm": "encoder.final_norm"}
    if config.labels:
        pairs["classifier"] = "classifier"
    pairs |= encoder_layer_pairs(config.num_encoder_layers, "encoder.layer", {
        "self_attention.q_proj": "attention.attention.query", "self_attention.k_proj": "attention.attention.key",
        "self_attention.v_proj": "attention.attention.value", "self_attention.out_proj": "attention.output.dense",
        "self_attention_block.norm": "layernorm_before", "feed_forward.linear1": "intermediate.dense",
        "feed_forward.linear2": "output.dense", "feed_forward_block.norm": "layernorm_after"})
    return names | weights_and_biases(pairs)


def load_hf_vit(directory: str | Path) -> VisionTransformer:
    """A :class:`VisionTransformer` (eval mode) with the weights of a Hugging Face ViT directory."""
    directory = Path(directory)
    state = {name: v for k, v in read_hf_weights(directory).items()
             if not (name := checkpoint_name(k)).startswith(_IGNORED)}
    labels = state["classifier.weight"].shape[0] if "classifier.weight" in state else 0
    config = config_from_hf(read_hf_config(directory), labels)
    if config.num_channels == 1 and _PATCHES in state and state[_PATCHES].shape[1] == 3:  # exported for RGB
        state[_PATCHES] = state[_PATCHES].sum(dim=1, keepdim=True)
    context = f"{directory} does not fit a ViT of this config"
    model = VisionTransformer(config)
    names = key_map(config)
    ours = separate_projections(model.state_dict())
    expected = {theirs: tuple(ours[mine].shape) for theirs, mine in names.items()}
    expected[_POSITIONS] = (1, *expected[_POSITIONS])
    state = check_state(state, expected, context)
    state[_POSITIONS] = state[_POSITIONS][0]
    model.load_state_dict({names[k]: v for k, v in state.items()}, strict=True)
    return model.eval()


def save_hf_vit(model: VisionTransformer, directory: str | Path, processor: ImageProcessor | None = None) -> None:
    """Write ``config.json`` + ``model.safetensors`` that ``ViTForImageClassification.from_pretrained``
    (``ViTModel`` without labels) loads, and the image processor's ``preprocessor_config.json``, atomically;
    a grayscale model as a 3-channel one (see above)."""
    hf_config = config_to_hf(model.config)
    ours = separate_projections(model.state_dict())
    state: dict[str, Tensor] = {theirs: ours[mine].detach().contiguous().clone()
                                for theirs, mine in key_map(model.config).items()}
    state[_POSITIONS] = state[_POSITIONS][None]
    if model.config.num_channels == 1:  # (d, 1, p, p) → (d, 3, p, p)
        state[_PATCHES] = state[_PATCHES] * torch.tensor(LUMA, dtype=state[_PATCHES].dtype)[None, :, None, None]
        if processor is not None:
            processor = ImageProcessor(processor.image_size, processor.image_mean * 3, processor.image_std * 3)
    if model.config.labels:  # the task model keeps the encoder under ``vit.``
        state = {k if k.startswith("classifier.") else f"vit.{k}": v for k, v in state.items()}
    with atomic_directory(Path(directory)) as tmp:
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if processor is not None:
            processor.save(tmp / PREPROCESSOR_CONFIG)
