"""The encoder-decoder Transformer of "Attention Is All You Need" (§3, Figure 1).

    memory = Encoder(Dropout(Emb(src)·√d_model + PE))                         (batch, src_len, d_model)
    h      = Decoder(Dropout(Emb(tgt)·√d_model + PE), memory)                 (batch, tgt_len, d_model)
    logits = h Eᵀ                                                             (batch, tgt_len, vocab)

With a shared vocabulary and ``tie_embeddings`` the source embedding, the target embedding and the
pre-softmax projection are one matrix E (§3.4). With ``copy_attention`` the output is a
pointer-generator's log P instead, mixing h Eᵀ's distribution with copying source tokens
(:mod:`transformerkit.nn.pointer`); every consumer reads it as logits.

:func:`warm_started_from_encoder` builds one from a pretrained encoder-only model (BERT2BERT).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from transformerkit.config import EncoderDecoderConfig
from transformerkit.models import builders
from transformerkit.models.common import EncoderDecoderModel
from transformerkit.models.encoder_only import EncoderOnlyTransformer
from transformerkit.nn.kv_cache import DecoderCache, positions_after
from transformerkit.nn.layers import LayerAttention
from transformerkit.nn.masks import padding_mask
from transformerkit.nn.pointer import PointerGenerator


class EncoderDecoderTransformer(EncoderDecoderModel):
    model_type = "transformerkit-encoder-decoder"
    config_class = EncoderDecoderConfig
    requires = "an encoder-decoder model needs num_encoder_layers > 0 and num_decoder_layers > 0"
    config: EncoderDecoderConfig

    def __init__(self, config: EncoderDecoderConfig) -> None:
        super().__init__(config)
        src_tokens = builders.token_embedding(config, config.vocab_size)
        if config.shared_vocab and config.tie_embeddings:
            tgt_tokens = src_tokens
        else:
            tgt_tokens = builders.token_embedding(config, config.target_vocab_size)
        self.src_embedding = builders.input_embedding(config, src_tokens)
        self.tgt_embedding = builders.input_embedding(config, tgt_tokens)
        self.encoder = builders.transformer_stack(config, config.num_encoder_layers, cross_attention=False)
        self.decoder = builders.transformer_stack(config, config.num_decoder_layers, cross_attention=True)
        self.output_projection = builders.output_projection(config, tgt_tokens)
        self.pointer = PointerGenerator(config.d_model) if config.copy_attention else None

    # ------------------------------------------------------------------------------------ parts
    def source_mask(self, src: Tensor) -> Tensor:
        """Key-padding mask of the source ids (batch, src_len) → (batch, 1, 1, src_len)."""
        return padding_mask(src, self.config.pad_id)

    def encode(self, src: Tensor, src_mask: Tensor | None = None, need_weights: bool = False
               ) -> tuple[Tensor, list[LayerAttention]]:
        """src: (batch, src_len) ids → memory (batch, src_len, d_model)."""
        if src_mask is None:
            src_mask = self.source_mask(src)
        positions = positions_after(None, *src.shape, device=src.device)
        x = self.src_embedding(src, positions)
        return self.encoder(x, mask=src_mask, positions=positions, need_weights=need_weights)

    def decode(self, tgt: Tensor, memory: Tensor, memory_mask: Tensor | None,
               cache: DecoderCache | None = None, need_weights: bool = False
               ) -> tuple[Tensor, list[LayerAttention]]:
        """tgt: (batch, tgt_len) ids (only the new ones when ``cache`` holds earlier steps),
        memory: (batch, src_len, d_model) → (batch, tgt_len, d_model) decoder states.

        Target padding needs no mask: with the causal mask a position never sees later ones, and
        padding comes last.
        """
        positions = positions_after(cache, *tgt.shape, device=tgt.device)
        x = self.tgt_embedding(tgt, positions)
        return self.decoder(x, causal=True, memory=memory, memory_mask=memory_mask,
                            positions=positions, cache=cache, need_weights=need_weights)

    def logits(self, hidden: Tensor) -> Tensor:
        """Pre-softmax linear transformation: (batch, seq, d_model) → (batch, seq, vocab)."""
        return self.output_projection(hidden)

    def output(self, hidden: Tensor, memory: Tensor, memory_mask: Tensor, src: Tensor) -> Tensor:
        """What the decoder states predict: ``logits(hidden)`` (rows, tgt_len, vocab), or with
        ``copy_attention`` the pointer-generator's log P over the source ``src`` (groups, src_len)
        and its ``memory``; rows = groups · g, g consecutive rows per source (beams)."""
        logits = self.logits(hidden)
        return logits if self.pointer is None else self.pointer(hidden, logits, memory, memory_mask, src)

    @property
    def cross_attention_shape(self) -> tuple[int, int]:
        return len(self.decoder.layers), self.config.num_heads

    # --------------------------------------------------------------------------------- helpers
    def new_cache(self, capacity: int, memory: Tensor) -> DecoderCache:
        """An empty cache for up to ``capacity`` target positions over ``memory`` (batch, src_len, d_model)."""
        return DecoderCache.create(len(self.decoder.layers), capacity, memory.shape[1])

    def parameter_parts(self) -> dict[str, list[nn.Module | nn.Parameter]]:
        return {
            "embeddings": [self.src_embedding, self.tgt_embedding],
            "encoder": [self.encoder],
            "decoder": [self.decoder],
            "output_projection": [self.output_projection],
            **({"pointer": [self.pointer]} if self.pointer is not None else {}),
        }


def warm_started_from_encoder(encoder: EncoderOnlyTransformer, **changes: Any) -> EncoderDecoderTransformer:
    """An encoder-decoder whose weights come from a pretrained encoder-only model (BERT2BERT in
    Rothe et al., 2020, "Leveraging Pre-trained Checkpoints for Sequence Generation Tasks").

    The architecture is the encoder's (``changes`` may set training fields such as ``dropout``):
    as many decoder layers as encoder layers, one shared vocabulary, logits tied to the token
    embedding E. Copied: the input embedding (tokens, positions, token types, LayerNorm) into both
    ``src_embedding`` and ``tgt_embedding``, every encoder layer, and into decoder layer i the
    self-attention, feed-forward and their norms of encoder layer i (the decoder's self-attention
    is then made causal by its mask). Fresh: each decoder layer's cross-attention and its norm —
    the only weights that have never been trained. The encoder's heads (pooler, classifier, span,
    masked LM) are left behind.
    """
    config = EncoderDecoderConfig.from_shared(encoder.config, num_encoder_layers=encoder.config.num_encoder_layers,
                                              num_decoder_layers=encoder.config.num_encoder_layers,
                                              tie_embeddings=True, **changes)
    model = EncoderDecoderTransformer(config)
    state: dict[str, Tensor] = {}
    for name, tensor in encoder.state_dict().items():
        if name.startswith("embedding."):
            state["src_" + name] = state["tgt_" + name] = tensor
        elif name.startswith("encoder."):
            state[name] = state["decoder." + name.removeprefix("encoder.")] = tensor
    missing, unexpected = model.load_state_dict(state, strict=False)
    untrained = [n for n in missing if ".cross_attention" not in n and not n.startswith("output_projection.")]
    if unexpected or untrained:
        raise ValueError(f"the encoder's weights do not fit an encoder-decoder: missing {untrained}, "
                         f"unexpected {unexpected}")
    return model
