"""Skipping padding: a padded batch's real tokens get the outputs and gradients they get alone."""

import pytest
import torch

from transformerkit.config import EncoderOnlyConfig, preset
from transformerkit.models.encoder_only import EncoderOnlyTransformer
from transformerkit.nn.attention_kernels import attend, reference_attention
from transformerkit.nn.packing import TokenPacking, packing_for

LENGTHS = [9, 4, 7]


def padded_batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, vocab, (len(LENGTHS), max(LENGTHS)), generator=generator)
    mask = torch.arange(max(LENGTHS))[None] < torch.tensor(LENGTHS)[:, None]
    return ids.masked_fill(~mask, 0), mask


def test_pack_and_unpack_invert_each_other_with_zeros_at_pads() -> None:
    _, real = padded_batch(50)
    packing = TokenPacking.of(real)
    x = torch.randn(*real.shape, 5)
    packed = packing.pack(x)
    assert packed.shape == (sum(LENGTHS), 5)
    torch.testing.assert_close(packed, x[real])  # row-major order of the real tokens
    unpacked = packing.unpack(packed)
    torch.testing.assert_close(unpacked[real], x[real])
    assert not unpacked[~real].any()


def test_packing_applies_to_key_padding_masks_with_pads_only() -> None:
    x = torch.randn(2, 4, 8)
    full = torch.ones(2, 1, 1, 4, dtype=torch.bool)
    assert packing_for(x, None) is None
    assert packing_for(x, full) is None  # nothing to skip
    assert packing_for(x, torch.ones(2, 1, 4, 4, dtype=torch.bool)) is None  # not a key padding mask
    padded = full.clone()
    padded[1, ..., 2:] = False
    assert packing_for(x, padded).index.tolist() == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("norm_position", ["post", "pre"])
def test_each_sequence_gets_the_outputs_and_gradients_it_gets_alone(norm_position: str) -> None:
    config = EncoderOnlyConfig.from_shared(preset("tiny", vocab_size=50, dropout=0.0, positional="learned",
                                                  norm_position=norm_position, max_positions=16), num_encoder_layers=2)
    torch.manual_seed(0)
    model = EncoderOnlyTransformer(config)
    ids, mask = padded_batch(50)
    hidden, _ = model(ids, mask)
    assert not hidden[~mask].any()  # pad positions are not computed
    hidden[mask].square().sum().backward()
    batched = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    for row, length in enumerate(LENGTHS):  # every sequence alone, unpadded
        alone, _ = model(ids[row:row + 1, :length])
        torch.testing.assert_close(hidden[row, :length], alone[0], atol=1e-5, rtol=1e-5)
        alone.square().sum().backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(batched[name], p.grad, atol=1e-4, rtol=1e-4, msg=name)


def test_bf16_inference_attention_runs_in_fp32_and_returns_bf16() -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 6, 8) for _ in range(3))
    mask = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    mask[1, ..., 4:] = False
    expected, _ = reference_attention(q.bfloat16().float(), k.bfloat16().float(), v.bfloat16().float(), mask)
    with torch.no_grad():
        out, _ = attend(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask, False, 0.0, "auto")
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected.bfloat16().float(), atol=1e-2, rtol=0)
