"""Speech decoder: streaming step() with a KV cache reproduces the teacher-forced forward()."""

from __future__ import annotations

import torch
from freezeempath.config import SpeechDecoderConfig
from freezeempath.model.build import build_speech_decoder
from freezeempath.model.interleave import Side, interleave_layout
from freezeempath.model.speech_decoder import UnitStream


def _decoder():
    torch.manual_seed(0)
    return build_speech_decoder(SpeechDecoderConfig(), d_llm=24, text_vocab=50, n_units=16).eval()


def test_streaming_matches_forward_on_the_same_inputs():
    dec, (read, write) = _decoder(), (3, 4)
    n, m = 7, 13
    hidden, tokens, units = torch.randn(1, n, 24), torch.randint(0, 50, (1, n)), torch.randint(0, 16, (1, m))
    with torch.no_grad():
        ref = dec(hidden, tokens, torch.tensor([n]), units, torch.tensor([m]), read, write)
    # positions whose next input is a unit predict that unit
    layout = interleave_layout(n + 1, m + 1, read, write)
    predicting = [p - 1 for p, (side, _) in enumerate(layout) if side is Side.UNIT]
    expected = ref.logits[0, predicting]

    stream, got, forced = UnitStream(dec, max_units=100), [], units[0].tolist() + [dec.n_units]
    for c in range(0, n, read):
        stream.read(hidden[0, c : c + read], tokens[0, c : c + read])
        if c + read < n:
            done = len([g for g in got for _ in g])
            got.append(stream.write(write, forced=forced[done : done + write]).logits)
    stream.end_text()
    done = sum(len(g) for g in got)
    result = stream.write(100, forced=forced[done:])
    got.append(result.logits)
    assert result.finished
    torch.testing.assert_close(torch.cat(got), expected, atol=1e-4, rtol=1e-4)


def test_sampling_draws_units_only_and_respects_the_budget():
    dec = _decoder()
    stream = UnitStream(dec, max_units=10, generator=torch.Generator().manual_seed(0))
    stream.read(torch.randn(3, 24), torch.tensor([1, 2, 3]))
    first = stream.write(4)
    stream.end_text()
    rest = stream.write(100)
    units = first.units + rest.units
    assert all(0 <= u < dec.n_units for u in units)
    assert len(units) <= 10 and rest.finished


def test_forward_loss_only_counts_units():
    dec = _decoder()
    out = dec(
        torch.randn(2, 5, 24),
        torch.randint(0, 50, (2, 5)),
        torch.tensor([5, 2]),
        torch.randint(0, 16, (2, 9)),
        torch.tensor([9, 4]),
        3,
        4,
    )
    counted = (out.labels != -100).sum(dim=1)
    assert counted.tolist() == [10, 5]  # units + EOS per item
    assert torch.isfinite(out.loss)
    assert (out.labels[out.labels != -100] > dec.sep_id).all()
