"""The pointer-generator output (copy_attention): the formula, a distribution, copying, and decoding
that still does not depend on the batch."""

import pytest
import torch

from transformerkit.config import preset
from transformerkit.generation.decoders import Seq2SeqDecoder
from transformerkit.generation.search import greedy_decode, translate_ids
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer

PAD = 0


def copying_model(**changes) -> EncoderDecoderTransformer:
    torch.manual_seed(0)
    config = preset("tiny", vocab_size=40, d_model=32, d_ff=64, num_heads=4, dropout=0.0, copy_attention=True,
                    **changes)
    model = EncoderDecoderTransformer(config).eval()
    with torch.no_grad():  # make EOS rare so outputs have some length
        model.output_projection.weight[config.eos_id] *= 0.2
    return model


def sources() -> torch.Tensor:
    src = torch.randint(3, 40, (3, 7), generator=torch.Generator().manual_seed(1))
    src[1, 4:] = PAD
    return src


@torch.no_grad()
def test_the_output_is_the_pointer_generator_mixture() -> None:
    model = copying_model()
    src, tgt = sources(), torch.randint(3, 40, (3, 5), generator=torch.Generator().manual_seed(2))
    log_p = model(src, tgt)
    assert log_p.dtype == torch.float32 and log_p.shape == (3, 5, 40)
    torch.testing.assert_close(log_p.exp().sum(-1), torch.ones(3, 5))
    mask = model.source_mask(src)
    memory, _ = model.encode(src, mask)
    hidden, _ = model.decode(tgt, memory, mask)
    pointer = model.pointer
    for b in range(3):  # the formula, one sentence and one source position at a time
        real = int((src[b] != PAD).sum())
        scores = pointer.query(hidden[b]) @ memory[b, :real].T / 32 ** 0.5
        attention = scores.softmax(-1)
        p_gen = torch.sigmoid(pointer.gate(hidden[b]))
        expected = p_gen * model.logits(hidden[b]).softmax(-1)
        for i in range(real):
            expected[:, src[b, i]] += (1 - p_gen[:, 0]) * attention[:, i]
        torch.testing.assert_close(log_p[b].exp(), expected, atol=1e-6, rtol=1e-5)


def test_a_closed_gate_copies_the_source_and_never_a_pad() -> None:
    model = copying_model()
    with torch.no_grad():
        model.pointer.gate.bias.fill_(-1e4)  # p_gen = 0: copy only
        model.pointer.query.weight.zero_()
        model.pointer.query.bias.zero_()  # uniform attention over the real source tokens
    src = torch.tensor([[5, 7, 5, 9, 2, PAD, PAD]])
    with torch.no_grad():
        p = model(src, torch.tensor([[1, 5, 7]])).exp()[0]
    expected = torch.zeros(40)
    expected[5], expected[7], expected[9], expected[2] = 2 / 5, 1 / 5, 1 / 5, 1 / 5
    for row in p:
        torch.testing.assert_close(row, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("copies", [1, 3])
def test_step_decoding_gives_the_teacher_forced_outputs(copies: int) -> None:
    model = copying_model()
    src = sources()
    tgt = torch.randint(3, 40, (3, 4), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model(src, tgt).repeat_interleave(copies, dim=0)
        decoder = Seq2SeqDecoder(model, src, copies=copies, capacity=8)
    rows = tgt.repeat_interleave(copies, dim=0)
    with torch.no_grad():
        for t in range(4):
            torch.testing.assert_close(decoder.step(rows[:, t:t + 1]), expected[:, t], atol=1e-5, rtol=1e-5)


def test_beam_search_with_copying_does_not_depend_on_batch_or_padding() -> None:
    model = copying_model()
    g = torch.Generator().manual_seed(2)
    sentence = torch.randint(3, 40, (1, 6), generator=g)
    alone = translate_ids(model, sentence, beam=4, max_length_offset=8)[0]
    batch = torch.full((4, 12), PAD)
    batch[:3] = torch.randint(3, 40, (3, 12), generator=g)
    batch[3, :6] = sentence[0]
    in_batch = translate_ids(model, batch, beam=4, max_length_offset=8)[3]
    assert in_batch.tokens == alone.tokens and len(alone.tokens) > 0
    assert in_batch.score == pytest.approx(alone.score, abs=1e-4)
    greedy = greedy_decode(model, sentence, max_length_offset=8)[0].tolist()
    beam_one = translate_ids(model, sentence, beam=1, max_length_offset=8)[0]
    eos = model.config.eos_id
    assert beam_one.tokens == (greedy[:greedy.index(eos)] if eos in greedy else greedy[:6 + 8 - 1])


def test_the_pointer_trains_and_needs_a_shared_vocabulary() -> None:
    model = copying_model().train()
    src, tgt = sources(), torch.randint(3, 40, (3, 5), generator=torch.Generator().manual_seed(4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.loss(src, tgt[:, :-1], tgt[:, 1:], reduction="sum")
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.pointer.parameters())
    assert set(model.parameter_counts()) >= {"pointer", "total"}
    with pytest.raises(ValueError, match="copy_attention copies source tokens into the output: it needs one "
                                         "shared vocabulary"):
        preset("tiny", vocab_size=40, tgt_vocab_size=50, copy_attention=True)
