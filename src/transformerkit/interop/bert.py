"""BERT checkpoints in Hugging Face's layout ⇄ :class:`EncoderOnlyTransformer`.

Hugging Face ``BertModel`` names (all ``nn.Linear``, so no transposes; an optional ``bert.``
prefix is dropped):

    embeddings.word_embeddings / position_embeddings / token_type_embeddings / LayerNorm
        → embedding.tokens.embedding / positional.embedding / segments / norm
    encoder.layer.{i}.attention.self.{query,key,value}   → encoder.layers.{i}.self_attention.qkv_proj (stacked)
    encoder.layer.{i}.attention.output.dense             → encoder.layers.{i}.self_attention.out_proj
    encoder.layer.{i}.attention.output.LayerNorm         → encoder.layers.{i}.self_attention_block.norm
    encoder.layer.{i}.intermediate.dense                 → encoder.layers.{i}.feed_forward.linear1
    encoder.layer.{i}.output.dense                       → encoder.layers.{i}.feed_forward.linear2
    encoder.layer.{i}.output.LayerNorm                   → encoder.layers.{i}.feed_forward_block.norm
    pooler.dense                                         → pooler
    classifier            (BertForSequenceClassification) → classifier.1   (labels from id2label)
    qa_outputs            (BertForQuestionAnswering)      → span_head
    cls.predictions.transform.{dense,LayerNorm}, .bias  (BertForMaskedLM) → masked_lm_head.{dense,norm}, .bias

Which heads (and whether a pooler) a checkpoint has is read from its tensors. The masked-LM
decoder is tied to the word embeddings, as in every BERT; its stored copy is checked and dropped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import Tensor

from transformerkit.checkpoint import CheckpointError, atomic_directory
from transformerkit.config import EncoderOnlyConfig
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.interop.common import (TO_HF_ACTIVATION, activation_from_hf, check_layout, check_state,
                                           drop_tied_output, encoder_layer_pairs, read_hf_config, read_hf_weights,
                                           separate_projections, weights_and_biases, write_hf_tokenizer)
from transformerkit.models.encoder_only import EncoderOnlyTransformer

_IGNORED = ("embeddings.position_ids",  # a buffer older checkpoints carry
            "cls.seq_relationship.",  # BertForPreTraining's next-sentence head
            "cls.predictions.decoder.bias")  # the same tensor as cls.predictions.bias
_TIED_DECODER = "cls.predictions.decoder.weight"
_HEAD_PREFIXES = ("classifier.", "qa_outputs.", "cls.")
_ARCHITECTURES = {"span_head": "BertForQuestionAnswering", "masked_lm_head": "BertForMaskedLM",
                  "labels": "BertForSequenceClassification"}


def heads_from_weights(state: dict[str, Tensor], hf: dict[str, Any]) -> dict[str, Any]:
    """The pooler and head fields of the config that fit a checkpoint's tensors (``bert.`` prefix dropped)."""
    heads: dict[str, Any] = {"pooler": "pooler.dense.weight" in state, "span_head": "qa_outputs.weight" in state,
                             "masked_lm_head": "cls.predictions.transform.dense.weight" in state}
    if "classifier.weight" in state:
        count = state["classifier.weight"].shape[0]
        names = hf.get("id2label") or {}
        heads["labels"] = [str(names.get(str(i), names.get(i, f"LABEL_{i}"))) for i in range(count)]
    return heads


def config_from_hf(hf: dict[str, Any], heads: dict[str, Any] | None = None) -> EncoderOnlyConfig:
    """An :class:`EncoderOnlyConfig` from a BERT ``config.json`` (with the pooler/head fields ``heads``);
    unsupported options raise :class:`CheckpointError`."""
    if hf.get("model_type") != "bert":
        raise CheckpointError(f"not a BERT config (model_type {hf.get('model_type')!r})")
    activation = activation_from_hf(hf.get("hidden_act", "gelu"), "hidden_act")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(f"unsupported position_embedding_type {hf['position_embedding_type']!r}")
    try:
        return EncoderOnlyConfig(
            vocab_size=hf.get("vocab_size", 30522), num_encoder_layers=hf.get("num_hidden_layers", 12),
            d_model=hf.get("hidden_size", 768), d_ff=hf.get("intermediate_size", 3072),
            num_heads=hf.get("num_attention_heads", 12), dropout=float(hf.get("hidden_dropout_prob", 0.1)),
            attention_dropout=float(hf.get("attention_probs_dropout_prob", 0.1)), label_smoothing=0.0,
            positional="learned", max_positions=hf.get("max_position_embeddings", 512), norm_position="post",
            activation=activation,
            layer_norm_eps=hf.get("layer_norm_eps", 1e-12), scale_embeddings=False,
            type_vocab_size=hf.get("type_vocab_size", 2), embedding_norm=True, tie_embeddings=True,
            pad_id=hf.get("pad_token_id", 0) or 0, bos_id=0, eos_id=0, **(heads or {}))
    except ValueError as error:
        raise CheckpointError(f"BERT config: {error}") from None


def config_to_hf(config: EncoderOnlyConfig) -> dict[str, Any]:
    check_layout(config, {"positional": "learned", "norm_position": "post", "bias": True,
                          "scale_embeddings": False, "embedding_norm": True}, "BERT")
    heads = [name for field, name in _ARCHITECTURES.items() if getattr(config, field)]
    labels = ({"id2label": dict(enumerate(config.labels)), "label2id": {n: i for i, n in enumerate(config.labels)}}
              if config.labels else {})
    return {
        "model_type": "bert", "architectures": heads or ["BertModel"], "vocab_size": config.vocab_size,
        "hidden_size": config.d_model, "num_hidden_layers": config.num_encoder_layers,
        "num_attention_heads": config.num_heads, "intermediate_size": config.d_ff,
        "hidden_act": TO_HF_ACTIVATION[config.activation],
        "hidden_dropout_prob": config.dropout, "attention_probs_dropout_prob": config.attention_dropout,
        "max_position_embeddings": config.max_positions, "type_vocab_size": config.type_vocab_size,
        "layer_norm_eps": config.layer_norm_eps, "pad_token_id": config.pad_id,
        "position_embedding_type": "absolute", **labels,
    }


def key_map(config: EncoderOnlyConfig) -> dict[str, str]:
    """Hugging Face key → our key, for every tensor."""
    names = {"embeddings.word_embeddings.weight": "embedding.tokens.embedding.weight",
             "embeddings.position_embeddings.weight": "embedding.positional.embedding.weight",
             "embeddings.token_type_embeddings.weight": "embedding.segments.weight"}
    pairs = {"embeddings.LayerNorm": "embedding.norm"}
    if config.pooler:
        pairs["pooler.dense"] = "pooler"
    if config.labels:
        pairs["classifier"] = "classifier.1"
    if config.span_head:
        pairs["qa_outputs"] = "span_head"
    if config.masked_lm_head:
        names["cls.predictions.bias"] = "masked_lm_head.bias"
        pairs |= {"cls.predictions.transform.dense": "masked_lm_head.dense",
                  "cls.predictions.transform.LayerNorm": "masked_lm_head.norm"}
    pairs |= encoder_layer_pairs(config.num_encoder_layers, "encoder.layer", {
        "self_attention.q_proj": "attention.self.query", "self_attention.k_proj": "attention.self.key",
        "self_attention.v_proj": "attention.self.value", "self_attention.out_proj": "attention.output.dense",
        "self_attention_block.norm": "attention.output.LayerNorm", "feed_forward.linear1": "intermediate.dense",
        "feed_forward.linear2": "output.dense", "feed_forward_block.norm": "output.LayerNorm"})
    return names | weights_and_biases(pairs)


def load_hf_bert(directory: str | Path) -> EncoderOnlyTransformer:
    """An :class:`EncoderOnlyTransformer` (eval mode) with the weights of a Hugging Face BERT directory."""
    directory = Path(directory)
    state = {k.removeprefix("bert."): v for k, v in read_hf_weights(directory).items()
             if not k.removeprefix("bert.").startswith(_IGNORED)}
    hf = read_hf_config(directory)
    config = config_from_hf(hf, heads_from_weights(state, hf))
    context = f"{directory} does not fit a BERT of this config"
    drop_tied_output(state, _TIED_DECODER, "embeddings.word_embeddings.weight", context)
    model = EncoderOnlyTransformer(config)
    names = key_map(config)
    ours = separate_projections(model.state_dict())
    expected = {theirs: tuple(ours[mine].shape) for theirs, mine in names.items()}
    state = {names[k]: v for k, v in check_state(state, expected, context).items()}
    if config.masked_lm_head:
        state["masked_lm_head.projection.weight"] = state["embedding.tokens.embedding.weight"]
    model.load_state_dict(state, strict=True)
    return model.eval()


def save_hf_bert(model: EncoderOnlyTransformer, directory: str | Path, tokenizer: SubwordTokenizer | None = None) -> None:
    """Write ``config.json`` + ``model.safetensors`` that ``BertModel.from_pretrained`` loads (and
    the tokenizer files for ``AutoTokenizer``), atomically."""
    hf_config = config_to_hf(model.config)
    ours = separate_projections(model.state_dict())
    state: dict[str, Tensor] = {theirs: ours[mine].detach().contiguous().clone()
                                for theirs, mine in key_map(model.config).items()}
    if model.config.masked_lm_head:
        state[_TIED_DECODER] = state["embeddings.word_embeddings.weight"].clone()
    if hf_config["architectures"] != ["BertModel"]:  # task models keep the encoder under ``bert.``
        state = {k if k.startswith(_HEAD_PREFIXES) else f"bert.{k}": v for k, v in state.items()}
    with atomic_directory(Path(directory)) as tmp:
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer is not None:
            write_hf_tokenizer(tmp, tokenizer, model.config.max_positions)
