"""Model configuration: every axis that Table 3 of the paper varies, validated, with named presets.

A :class:`TransformerConfig` is plain data. It is what ``config.json`` holds next to a checkpoint,
what ``--set key=value`` edits on the command line, and what the model builders read.

==================  =====================  ==========================================================
paper (Table 3)     field                  meaning
==================  =====================  ==========================================================
N                   ``num_encoder_layers``  layers in the encoder stack (``num_decoder_layers`` too)
d_model             ``d_model``            width of every sub-layer output
d_ff                ``d_ff``               inner width of the position-wise feed-forward network
h                   ``num_heads``          attention heads
d_k                 ``d_k``                query/key width per head (default d_model / h)
d_v                 ``d_v``                value width per head (default d_model / h)
P_drop              ``dropout``            residual and embedding dropout
ε_ls                ``label_smoothing``    label smoothing (stored for training)
positional (row E)  ``positional``         ``sinusoidal`` | ``learned`` | ``rotary``
==================  =====================  ==========================================================
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from transformerkit.typed_config import check_types, from_mapping

Positional = Literal["sinusoidal", "learned", "rotary"]
NormPosition = Literal["post", "pre"]
Activation = Literal["relu", "gelu", "gelu_tanh"]
AttentionKernel = str
"""A name in :data:`transformerkit.nn.attention_kernels.ATTENTION_KERNELS` (``auto``, ``fused``,
``reference``, or one registered there), checked when the model is built."""


@dataclass
class TransformerConfig:
    """Hyper-parameters of a Transformer (defaults: the paper's base encoder-decoder model).

    One config serves every family: a decoder-only model (GPT) has ``num_encoder_layers = 0``; the
    model class (``model_type`` in ``config.json``) says which family reads it.
    """

    vocab_size: int = 37000
    """Source vocabulary size; also the target's when ``tgt_vocab_size`` is None (shared)."""
    tgt_vocab_size: int | None = None
    """Target vocabulary size for separate vocabularies; None shares the source vocabulary."""
    num_encoder_layers: int = 6
    """Layers of the encoder stack (0 in a decoder-only model)."""
    num_decoder_layers: int = 6
    d_model: int = 512
    d_ff: int = 2048
    num_heads: int = 8
    d_k: int | None = None
    d_v: int | None = None
    dropout: float = 0.1
    attention_dropout: float = 0.0
    label_smoothing: float = 0.1
    positional: Positional = "sinusoidal"
    max_positions: int = 1024
    """Rows of the learned position table (only used when ``positional == 'learned'``)."""
    rotary_base: float = 10000.0
    norm_position: NormPosition = "post"
    activation: Activation = "relu"
    layer_norm_eps: float = 1e-5
    bias: bool = True
    scale_embeddings: bool = True
    type_vocab_size: int = 0
    """Token types (BERT's sentence A/B segments) with a learned embedding each; 0: none."""
    embedding_norm: bool = False
    """LayerNorm over the summed input embeddings (BERT)."""
    labels: list[str] = field(default_factory=list)
    """Class names of a classification head on an encoder-only or vision model (empty: no head)."""
    pooler: bool = True
    """Encoder-only: BERT's pooler (tanh of a linear map of the [CLS] state) that the sequence
    classifier reads; Hugging Face's masked-LM and QA checkpoints have none."""
    span_head: bool = False
    """Encoder-only: start/end logits per token for extractive question answering."""
    masked_lm_head: bool = False
    """Encoder-only: BERT's masked-LM head (dense, activation, LayerNorm, tied output projection)."""
    tie_embeddings: bool = True
    """Shared vocabulary: one matrix for both embeddings and the pre-softmax projection (§3.4).
    Separate vocabularies: the target embedding and the projection share one matrix."""
    copy_attention: bool = False
    """Encoder-decoder with a shared vocabulary: a pointer-generator output that mixes generating
    with copying source tokens (See et al., 2017; :mod:`transformerkit.nn.pointer`)."""
    image_size: int = 0
    """Vision models (ViT): height = width of the input images in pixels; 0 in text models."""
    patch_size: int = 16
    """Vision models: each P×P patch of the image is one token."""
    num_channels: int = 3
    """Vision models: colour channels of the input images (1: grayscale)."""
    attention_kernel: AttentionKernel = "auto"
    """``fused`` (PyTorch's scaled_dot_product_attention), ``reference`` (the formula), ``auto``
    (the one measured faster for the device, precision and mode), or any kernel registered in
    :data:`transformerkit.nn.attention_kernels.ATTENTION_KERNELS`."""
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def __post_init__(self) -> None:
        self.validate()

    # ----------------------------------------------------------------------------- derived values
    @property
    def head_dim_k(self) -> int:
        """d_k: query/key width per head (d_model / h unless set)."""
        return self.d_k if self.d_k is not None else self.d_model // self.num_heads

    @property
    def head_dim_v(self) -> int:
        """d_v: value width per head (d_model / h unless set)."""
        return self.d_v if self.d_v is not None else self.d_model // self.num_heads

    @property
    def shared_vocab(self) -> bool:
        return self.tgt_vocab_size is None

    @property
    def target_vocab_size(self) -> int:
        return self.vocab_size if self.tgt_vocab_size is None else self.tgt_vocab_size

    # --------------------------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise ``ValueError`` naming the first argument that is out of range."""
        check_types(self)
        positive = ["vocab_size", "d_model", "d_ff", "num_heads", "max_positions"]
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("num_encoder_layers", "num_decoder_layers", "type_vocab_size", "image_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {getattr(self, name)}")
        if self.num_encoder_layers + self.num_decoder_layers == 0:
            raise ValueError("a model needs at least one layer (num_encoder_layers + num_decoder_layers > 0)")
        for name in ("tgt_vocab_size", "d_k", "d_v"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be a positive integer or None, got {value}")
        for name in ("dropout", "attention_dropout", "label_smoothing"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if self.copy_attention and not self.shared_vocab:
            raise ValueError("copy_attention copies source tokens into the output: it needs one shared vocabulary "
                             "(tgt_vocab_size null)")
        if self.layer_norm_eps <= 0:
            raise ValueError(f"layer_norm_eps must be positive, got {self.layer_norm_eps}")
        if self.rotary_base <= 1:
            raise ValueError(f"rotary_base must be greater than 1, got {self.rotary_base}")
        if (self.d_k is None or self.d_v is None) and self.d_model % self.num_heads:
            missing = "d_k" if self.d_k is None else "d_v"
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads}) "
                f"when {missing} is not given")
        if self.positional == "sinusoidal" and self.d_model % 2:
            raise ValueError(f"d_model must be even for sinusoidal positions, got {self.d_model}")
        if self.positional == "rotary" and self.head_dim_k % 2:
            raise ValueError(f"d_k must be even for rotary positions, got {self.head_dim_k}")
        for name in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self, name)
            if not 0 <= value < min(self.vocab_size, self.target_vocab_size):
                raise ValueError(f"{name} ({value}) must be a token id below the vocabulary size")
        if self.image_size:
            if self.patch_size <= 0 or self.num_channels <= 0:
                raise ValueError(f"patch_size and num_channels must be positive, got {self.patch_size} and "
                                 f"{self.num_channels}")
            if self.image_size % self.patch_size:
                raise ValueError(f"image_size ({self.image_size}) must be a multiple of patch_size "
                                 f"({self.patch_size})")
        if self.labels and not self.pooler and not self.image_size:
            raise ValueError("a text classification head (labels) reads the pooler: set pooler = true")

    # ---------------------------------------------------------------------------- serialization
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TransformerConfig:
        return from_mapping(cls, values)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> TransformerConfig:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def replace(self, **changes: Any) -> TransformerConfig:
        """A copy with ``changes`` applied and validated; unknown keys raise ``ValueError``."""
        return TransformerConfig.from_dict({**self.to_dict(), **changes})


# GPT-2's layout (Radford et al., 2019): a decoder-only pre-norm stack with learned positions,
# tanh-approximate GELU, unscaled embeddings tied to the output, and <|endoftext|> (50256) as
# BOS, EOS and padding.
_GPT2 = {"num_encoder_layers": 0, "vocab_size": 50257, "max_positions": 1024, "positional": "learned",
         "norm_position": "pre", "activation": "gelu_tanh", "scale_embeddings": False,
         "dropout": 0.1, "attention_dropout": 0.1, "label_smoothing": 0.0,
         "pad_id": 50256, "bos_id": 50256, "eos_id": 50256}

# BERT's layout (Devlin et al., 2019): an encoder-only post-norm stack with learned positions,
# token types, a LayerNorm over the input embeddings, erf GELU, LayerNorm ε 1e-12, [PAD] = 0.
_BERT = {"num_decoder_layers": 0, "vocab_size": 30522, "max_positions": 512, "positional": "learned",
         "norm_position": "post", "activation": "gelu", "scale_embeddings": False, "layer_norm_eps": 1e-12,
         "type_vocab_size": 2, "embedding_norm": True, "dropout": 0.1, "attention_dropout": 0.1,
         "label_smoothing": 0.0, "pad_id": 0, "bos_id": 0, "eos_id": 0}

# ViT's layout (Dosovitskiy et al., 2021): an encoder-only pre-norm stack over image patches with a
# class token and learned positions, erf GELU, LayerNorm ε 1e-12, no pooler (the classifier reads
# the final LayerNorm of the class token), as Hugging Face's ViTForImageClassification.
_VIT = {"num_decoder_layers": 0, "vocab_size": 1, "positional": "learned", "norm_position": "pre",
        "activation": "gelu", "layer_norm_eps": 1e-12, "scale_embeddings": False, "pooler": False,
        "dropout": 0.0, "attention_dropout": 0.0, "label_smoothing": 0.0, "pad_id": 0, "bos_id": 0, "eos_id": 0,
        "image_size": 224, "patch_size": 16, "num_channels": 3}

# The paper's models (§6.1, Table 3), GPT-2's four sizes, BERT and ViT shapes, and small ones that
# train in minutes on a CPU.
PRESETS: dict[str, dict[str, Any]] = {
    "base": {},
    "big": {"d_model": 1024, "d_ff": 4096, "num_heads": 16, "dropout": 0.3},
    "small": {"num_encoder_layers": 3, "num_decoder_layers": 3, "d_model": 256, "d_ff": 1024,
              "num_heads": 4, "vocab_size": 8000},
    "tiny": {"num_encoder_layers": 2, "num_decoder_layers": 2, "d_model": 64, "d_ff": 256,
             "num_heads": 4, "vocab_size": 1000},
    "gpt2": {**_GPT2, "num_decoder_layers": 12, "d_model": 768, "d_ff": 3072, "num_heads": 12},
    "gpt2-medium": {**_GPT2, "num_decoder_layers": 24, "d_model": 1024, "d_ff": 4096, "num_heads": 16},
    "gpt2-large": {**_GPT2, "num_decoder_layers": 36, "d_model": 1280, "d_ff": 5120, "num_heads": 20},
    "gpt2-xl": {**_GPT2, "num_decoder_layers": 48, "d_model": 1600, "d_ff": 6400, "num_heads": 25},
    "bert-base": {**_BERT, "num_encoder_layers": 12, "d_model": 768, "d_ff": 3072, "num_heads": 12},
    "minilm-l6": {**_BERT, "num_encoder_layers": 6, "d_model": 384, "d_ff": 1536, "num_heads": 12},
    "vit-tiny-16": {**_VIT, "num_encoder_layers": 12, "d_model": 192, "d_ff": 768, "num_heads": 3},
    "vit-small-16": {**_VIT, "num_encoder_layers": 12, "d_model": 384, "d_ff": 1536, "num_heads": 6},
    "vit-base-16": {**_VIT, "num_encoder_layers": 12, "d_model": 768, "d_ff": 3072, "num_heads": 12},
    # ViT layout for 28×28 grayscale images (MNIST, Fashion-MNIST): 4×4 patches → 49 tokens + class token
    "vit-28": {**_VIT, "num_encoder_layers": 6, "d_model": 192, "d_ff": 384, "num_heads": 3,
               "image_size": 28, "patch_size": 4, "num_channels": 1, "dropout": 0.1},
    "vit-28-tiny": {**_VIT, "num_encoder_layers": 2, "d_model": 32, "d_ff": 64, "num_heads": 2,
                    "image_size": 28, "patch_size": 7, "num_channels": 1},
    # GPT-2 layout at CPU sizes (vocabulary and ids come from the tokenizer when training)
    "gpt-small": {**_GPT2, "num_decoder_layers": 6, "d_model": 384, "d_ff": 1536, "num_heads": 6,
                  "max_positions": 256, "dropout": 0.2, "attention_dropout": 0.0},
    "gpt-tiny": {**_GPT2, "num_decoder_layers": 2, "d_model": 64, "d_ff": 256, "num_heads": 4,
                 "vocab_size": 1000, "max_positions": 128, "pad_id": 0, "bos_id": 0, "eos_id": 0},
}

# Rows of Table 3 as changes to the base preset (row D only changes training, row E positions).
TABLE3_ROWS: dict[str, dict[str, Any]] = {
    "base": {},
    "A h=1": {"num_heads": 1, "d_k": 512, "d_v": 512},
    "A h=4": {"num_heads": 4, "d_k": 128, "d_v": 128},
    "A h=16": {"num_heads": 16, "d_k": 32, "d_v": 32},
    "A h=32": {"num_heads": 32, "d_k": 16, "d_v": 16},
    "B d_k=16": {"d_k": 16},
    "B d_k=32": {"d_k": 32},
    "C N=2": {"num_encoder_layers": 2, "num_decoder_layers": 2},
    "C N=4": {"num_encoder_layers": 4, "num_decoder_layers": 4},
    "C N=8": {"num_encoder_layers": 8, "num_decoder_layers": 8},
    "C d_model=256": {"d_model": 256, "d_k": 32, "d_v": 32},
    "C d_model=1024": {"d_model": 1024, "d_k": 128, "d_v": 128},
    "C d_ff=1024": {"d_ff": 1024},
    "C d_ff=4096": {"d_ff": 4096},
    "D P_drop=0.0": {"dropout": 0.0},
    "D P_drop=0.2": {"dropout": 0.2},
    "D eps_ls=0.0": {"label_smoothing": 0.0},
    "D eps_ls=0.2": {"label_smoothing": 0.2},
    "E learned positions": {"positional": "learned", "max_positions": 1024},
    "big": PRESETS["big"],
}


def preset(name: str, **changes: Any) -> TransformerConfig:
    """The named preset with ``changes`` applied, e.g. ``preset("base", vocab_size=32000)``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return TransformerConfig.from_dict({**PRESETS[name], **changes})
