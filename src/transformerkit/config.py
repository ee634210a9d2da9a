"""Model configuration: every axis that Table 3 of the paper varies, validated, with named presets.

A configuration is plain data: what ``config.json`` holds next to a checkpoint, what ``--set
key=value`` edits on the command line, and what the model builders read. Each family has its own
class, sharing the layers' fields of :class:`TransformerConfig`:

    TransformerConfig          d_model, d_ff, heads, dropout, positions, norm, activation, kernel
    ├── TextConfig             + vocabulary, input embedding (scale, token types, norm), tying, ids
    │   ├── EncoderDecoderConfig   + num_encoder_layers, num_decoder_layers, tgt_vocab_size, copy_attention
    │   ├── DecoderOnlyConfig      + num_decoder_layers
    │   └── EncoderOnlyConfig      + num_encoder_layers, labels, pooler, span_head, masked_lm_head
    └── VisionConfig           + num_encoder_layers, image_size, patch_size, num_channels, labels

A family outside this file (a recurrent baseline) subclasses what it shares, or nothing.

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
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from transformerkit.typed_config import check_types, from_mapping

Positional = Literal["sinusoidal", "learned", "rotary"]
NormPosition = Literal["post", "pre"]
Activation = Literal["relu", "gelu", "gelu_tanh"]
AttentionKernel = str
"""A name in :data:`transformerkit.nn.attention_kernels.ATTENTION_KERNELS` (``auto``, ``fused``,
``reference``, or one registered there), checked when the model is built."""


@dataclass
class TransformerConfig:
    """What every Transformer family shares: the layers' parts (defaults: the paper's base model).

    A family adds its own fields in a subclass (:class:`EncoderDecoderConfig`,
    :class:`DecoderOnlyConfig`, :class:`EncoderOnlyConfig`, :class:`VisionConfig`); the model class
    names the one it reads (``config_class``), and ``config.json`` holds that class's fields.
    """

    d_model: int = 512
    d_ff: int = 2048
    num_heads: int = 8
    d_k: int | None = None
    d_v: int | None = None
    dropout: float = 0.1
    attention_dropout: float = 0.0
    label_smoothing: float = 0.1
    """Label smoothing of the training loss (stored for training; every family's task reads it)."""
    positional: Positional = "sinusoidal"
    max_positions: int = 1024
    """Rows of the learned position table (only used when ``positional == 'learned'``)."""
    rotary_base: float = 10000.0
    norm_position: NormPosition = "post"
    activation: Activation = "relu"
    layer_norm_eps: float = 1e-5
    bias: bool = True
    attention_kernel: AttentionKernel = "auto"
    """``fused`` (PyTorch's scaled_dot_product_attention), ``reference`` (the formula), ``auto``
    (the one measured faster for the device, precision and mode), or any kernel registered in
    :data:`transformerkit.nn.attention_kernels.ATTENTION_KERNELS`."""

    family: ClassVar[str] = ""
    """The family's short name (``model.family`` in a recipe; ``model_type`` is ``transformerkit-`` + it)."""

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

    # --------------------------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise ``ValueError`` naming the first argument that is out of range (a family's class
        adds the checks of its own fields)."""
        check_types(self)
        for name in ("d_model", "d_ff", "num_heads", "max_positions"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("d_k", "d_v"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be a positive integer or None, got {value}")
        for name in ("dropout", "attention_dropout", "label_smoothing"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if not 0 < self.layer_norm_eps < math.inf:
            raise ValueError(f"layer_norm_eps must be positive, got {self.layer_norm_eps}")
        if not 1 < self.rotary_base < math.inf:
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

    def check_layers(self, **counts: int) -> None:
        """``ValueError`` unless every stack named in ``counts`` has at least one layer."""
        if any(n <= 0 for n in counts.values()):
            names = " and ".join(counts)
            raise ValueError(f"the {self.family} family needs at least one layer in each stack: {names} must be "
                             f"positive, got {' and '.join(str(n) for n in counts.values())}")

    # ---------------------------------------------------------------------------- serialization
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        return from_mapping(cls, values)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Self:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied and validated; unknown keys raise ``ValueError``."""
        return self.from_dict({**self.to_dict(), **changes})

    @classmethod
    def from_shared(cls, other: TransformerConfig, **changes: Any) -> Self:
        """This family's configuration with the fields it shares with ``other`` (another family's)
        and ``changes``: e.g. an encoder-decoder shaped like a pretrained encoder."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls.from_dict({**{k: v for k, v in other.to_dict().items() if k in names}, **changes})


@dataclass
class TextConfig(TransformerConfig):
    """The token side shared by the text families: vocabulary, input embedding, special ids."""

    vocab_size: int = 37000
    """Vocabulary size (the source's in an encoder-decoder with ``tgt_vocab_size`` set)."""
    scale_embeddings: bool = True
    """Multiply token embeddings by √d_model (§3.4; GPT-2 and BERT do not)."""
    type_vocab_size: int = 0
    """Token types (BERT's sentence A/B segments) with a learned embedding each; 0: none."""
    embedding_norm: bool = False
    """LayerNorm over the summed input embeddings (BERT)."""
    tie_embeddings: bool = True
    """One matrix for the token embedding and the pre-softmax projection (§3.4); an
    encoder-decoder with separate vocabularies shares the target embedding with the projection."""
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def validate(self) -> None:
        super().validate()
        if self.vocab_size <= 0:
            raise ValueError(f"vocab_size must be a positive integer, got {self.vocab_size}")
        if self.type_vocab_size < 0:
            raise ValueError(f"type_vocab_size must be a non-negative integer, got {self.type_vocab_size}")
        for name in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self, name)
            if not 0 <= value < min(self.vocab_size, self.target_vocab_size):
                raise ValueError(f"{name} ({value}) must be a token id below the vocabulary size")

    @property
    def target_vocab_size(self) -> int:
        """The vocabulary the model predicts (the one vocabulary, unless an encoder-decoder has two)."""
        return self.vocab_size


@dataclass
class EncoderDecoderConfig(TextConfig):
    """The paper's model (§3): an encoder stack and a decoder stack with cross-attention."""

    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    tgt_vocab_size: int | None = None
    """Target vocabulary size for separate vocabularies; None shares the source vocabulary."""
    copy_attention: bool = False
    """With a shared vocabulary: a pointer-generator output that mixes generating with copying
    source tokens (See et al., 2017; :mod:`transformerkit.nn.pointer`)."""

    family: ClassVar[str] = "encoder-decoder"

    def validate(self) -> None:
        super().validate()
        self.check_layers(num_encoder_layers=self.num_encoder_layers, num_decoder_layers=self.num_decoder_layers)
        if self.tgt_vocab_size is not None and self.tgt_vocab_size <= 0:
            raise ValueError(f"tgt_vocab_size must be a positive integer or None, got {self.tgt_vocab_size}")
        if self.copy_attention and not self.shared_vocab:
            raise ValueError("copy_attention copies source tokens into the output: it needs one shared vocabulary "
                             "(tgt_vocab_size null)")

    @property
    def shared_vocab(self) -> bool:
        return self.tgt_vocab_size is None

    @property
    def target_vocab_size(self) -> int:
        return self.vocab_size if self.tgt_vocab_size is None else self.tgt_vocab_size


@dataclass
class DecoderOnlyConfig(TextConfig):
    """A decoder stack without cross-attention over one vocabulary (GPT)."""

    num_decoder_layers: int = 6

    family: ClassVar[str] = "decoder-only"

    def validate(self) -> None:
        super().validate()
        self.check_layers(num_decoder_layers=self.num_decoder_layers)


@dataclass
class EncoderOnlyConfig(TextConfig):
    """An encoder stack with BERT's optional heads."""

    num_encoder_layers: int = 6
    labels: list[str] = field(default_factory=list)
    """Class names of a sequence classification head (empty: no head)."""
    pooler: bool = True
    """BERT's pooler (tanh of a linear map of the [CLS] state) that the sequence classifier reads;
    Hugging Face's masked-LM and QA checkpoints have none."""
    span_head: bool = False
    """Start/end logits per token for extractive question answering."""
    masked_lm_head: bool = False
    """BERT's masked-LM head (dense, activation, LayerNorm, tied output projection)."""

    family: ClassVar[str] = "encoder-only"

    def validate(self) -> None:
        super().validate()
        self.check_layers(num_encoder_layers=self.num_encoder_layers)
        if self.labels and not self.pooler:
            raise ValueError("a text classification head (labels) reads the pooler: set pooler = true")


@dataclass
class VisionConfig(TransformerConfig):
    """An encoder stack over image patches with a class token (ViT)."""

    num_encoder_layers: int = 12
    image_size: int = 224
    """Height = width of the input images in pixels."""
    patch_size: int = 16
    """Each P×P patch of the image is one token."""
    num_channels: int = 3
    """Colour channels of the input images (1: grayscale)."""
    labels: list[str] = field(default_factory=list)
    """Class names of the classification head (empty: no head)."""

    family: ClassVar[str] = "vit"

    def validate(self) -> None:
        super().validate()
        self.check_layers(num_encoder_layers=self.num_encoder_layers)
        for name in ("image_size", "patch_size", "num_channels"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})")


FLAT_CONFIG_FIELDS = frozenset(
    f.name for cls in (EncoderDecoderConfig, DecoderOnlyConfig, EncoderOnlyConfig, VisionConfig)
    for f in dataclasses.fields(cls))
"""The fields of the one flat configuration that every family shared until each had its own class:
a ``config.json`` or ``run.yaml`` written then holds all of them."""


def without_other_families_fields(config_class: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` less the fields of the flat configuration that ``config_class`` lacks (each
    family's model then required them at values it ignored: no encoder layers in a decoder-only
    model, no image size in a text model, …); other keys stay, to be refused as unknown."""
    names = {f.name for f in dataclasses.fields(config_class)}
    return {k: v for k, v in values.items() if k in names or k not in FLAT_CONFIG_FIELDS}


# GPT-2's layout (Radford et al., 2019): a decoder-only pre-norm stack with learned positions,
# tanh-approximate GELU, unscaled embeddings tied to the output, and <|endoftext|> (50256) as
# BOS, EOS and padding.
_GPT2 = {"vocab_size": 50257, "max_positions": 1024, "positional": "learned",
         "norm_position": "pre", "activation": "gelu_tanh", "scale_embeddings": False,
         "dropout": 0.1, "attention_dropout": 0.1, "label_smoothing": 0.0,
         "pad_id": 50256, "bos_id": 50256, "eos_id": 50256}

# BERT's layout (Devlin et al., 2019): an encoder-only post-norm stack with learned positions,
# token types, a LayerNorm over the input embeddings, erf GELU, LayerNorm ε 1e-12, [PAD] = 0.
_BERT = {"vocab_size": 30522, "max_positions": 512, "positional": "learned",
         "norm_position": "post", "activation": "gelu", "scale_embeddings": False, "layer_norm_eps": 1e-12,
         "type_vocab_size": 2, "embedding_norm": True, "dropout": 0.1, "attention_dropout": 0.1,
         "label_smoothing": 0.0, "pad_id": 0, "bos_id": 0, "eos_id": 0}

# ViT's layout (Dosovitskiy et al., 2021): an encoder-only pre-norm stack over image patches with a
# class token and learned positions, erf GELU, LayerNorm ε 1e-12 (the classifier reads the final
# LayerNorm of the class token), as Hugging Face's ViTForImageClassification.
_VIT = {"positional": "learned", "norm_position": "pre", "activation": "gelu", "layer_norm_eps": 1e-12,
        "dropout": 0.0, "attention_dropout": 0.0, "label_smoothing": 0.0}

# The paper's big model (Table 3, last row).
_BIG = {"d_model": 1024, "d_ff": 4096, "num_heads": 16, "dropout": 0.3}

# The paper's models (§6.1, Table 3), GPT-2's four sizes, BERT and ViT shapes, and small ones that
# train in minutes on a CPU. Each is an instance of its family's class.
PRESETS: dict[str, TransformerConfig] = {
    "base": EncoderDecoderConfig(),
    "big": EncoderDecoderConfig(**_BIG),
    "small": EncoderDecoderConfig(num_encoder_layers=3, num_decoder_layers=3, d_model=256, d_ff=1024,
                                  num_heads=4, vocab_size=8000),
    "tiny": EncoderDecoderConfig(num_encoder_layers=2, num_decoder_layers=2, d_model=64, d_ff=256,
                                 num_heads=4, vocab_size=1000),
    "gpt2": DecoderOnlyConfig(**_GPT2, num_decoder_layers=12, d_model=768, d_ff=3072, num_heads=12),
    "gpt2-medium": DecoderOnlyConfig(**_GPT2, num_decoder_layers=24, d_model=1024, d_ff=4096, num_heads=16),
    "gpt2-large": DecoderOnlyConfig(**_GPT2, num_decoder_layers=36, d_model=1280, d_ff=5120, num_heads=20),
    "gpt2-xl": DecoderOnlyConfig(**_GPT2, num_decoder_layers=48, d_model=1600, d_ff=6400, num_heads=25),
    "bert-base": EncoderOnlyConfig(**_BERT, num_encoder_layers=12, d_model=768, d_ff=3072, num_heads=12),
    "minilm-l6": EncoderOnlyConfig(**_BERT, num_encoder_layers=6, d_model=384, d_ff=1536, num_heads=12),
    "vit-tiny-16": VisionConfig(**_VIT, num_encoder_layers=12, d_model=192, d_ff=768, num_heads=3),
    "vit-small-16": VisionConfig(**_VIT, num_encoder_layers=12, d_model=384, d_ff=1536, num_heads=6),
    "vit-base-16": VisionConfig(**_VIT, num_encoder_layers=12, d_model=768, d_ff=3072, num_heads=12),
    # ViT layout for 28×28 grayscale images (MNIST, Fashion-MNIST): 4×4 patches → 49 tokens + class token
    "vit-28": VisionConfig(**{**_VIT, "dropout": 0.1}, num_encoder_layers=6, d_model=192, d_ff=384, num_heads=3,
                           image_size=28, patch_size=4, num_channels=1),
    "vit-28-tiny": VisionConfig(**_VIT, num_encoder_layers=2, d_model=32, d_ff=64, num_heads=2,
                                image_size=28, patch_size=7, num_channels=1),
    # GPT-2 layout at CPU sizes (vocabulary and ids come from the tokenizer when training)
    "gpt-small": DecoderOnlyConfig(**{**_GPT2, "dropout": 0.2, "attention_dropout": 0.0, "max_positions": 256},
                                   num_decoder_layers=6, d_model=384, d_ff=1536, num_heads=6),
    "gpt-tiny": DecoderOnlyConfig(**{**_GPT2, "vocab_size": 1000, "max_positions": 128, "pad_id": 0, "bos_id": 0,
                                     "eos_id": 0}, num_decoder_layers=2, d_model=64, d_ff=256, num_heads=4),
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
    "big": _BIG,
}


def preset(name: str, **changes: Any) -> TransformerConfig:
    """The named preset (of its family's class) with ``changes`` applied, e.g. ``preset("base", vocab_size=32000)``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name].replace(**changes)
