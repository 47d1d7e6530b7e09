"""Messages that cross Serve's hops pickle their tensors as NumPy arrays and unpickle equal."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from freezeempath.chat_template import Turn
from freezeempath.codec.build import build_codec
from freezeempath.config import load_config
from freezeempath.inference.audio_io import StreamingResampler
from freezeempath.inference.dialogue import EmotionResult, FinishReason
from freezeempath.inference.llm_session import GenerationRequest, TextGroup
from freezeempath.inference.speech_session import SpeechChunk
from freezeempath.inference.understanding import ClipFeatures
from freezeempath.inference.vocode import VocodeRequest, vocode_batch
from freezeempath.inference.wire import packed
from freezeempath.labels import EMOTIONS
from ray import cloudpickle

TORCH_PICKLE = b"_rebuild_tensor"  # what torch's own tensor pickle names


def _round_trip(obj):
    """Through cloudpickle, as Serve's gRPC transport sends call arguments and results."""
    data = cloudpickle.dumps(obj)
    return pickle.loads(data), data


def _assert_same(a, b):
    if isinstance(a, torch.Tensor):
        assert type(b) is torch.Tensor and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    elif hasattr(a, "__dataclass_fields__"):
        assert type(a) is type(b)
        for name in a.__dataclass_fields__:
            _assert_same(getattr(a, name), getattr(b, name))
    elif isinstance(a, StreamingResampler):
        assert vars(a).keys() == vars(b).keys()
        for name in vars(a):
            _assert_same(getattr(a, name), getattr(b, name))
    else:
        assert a == b


def _messages():
    g = torch.Generator().manual_seed(0)
    emotion = EmotionResult.from_logits(torch.randn(len(EMOTIONS), generator=g))
    return [
        ClipFeatures(torch.randn(7, 32, generator=g), torch.randn(1, 32, generator=g), emotion),
        GenerationRequest(
            turns=(Turn("user", spoken=True),),
            speech=(torch.randn(7, 32, generator=g),),
            emotion=(torch.randn(1, 32, generator=g),),
            max_new_tokens=5,
            seed=3,
        ),
        TextGroup((5, 6), ("a", "b"), torch.randn(2, 32, generator=g), FinishReason.STOP, 11),
        SpeechChunk("ab", (5, 6), ("a", "b"), (1, 2, 3), None, 11, audio=torch.randn(400, generator=g)),
        SpeechChunk("", error="the LLM stream failed", server_fault=True),
    ]


@pytest.mark.parametrize("index", range(5))
def test_messages_pickle_their_tensors_as_arrays_and_unpickle_equal(index):
    message = _messages()[index]
    back, data = _round_trip(message)
    _assert_same(message, back)
    assert TORCH_PICKLE not in data
    assert all(t.flags.writeable for t in _tensors(back))  # writable: in-place ops stay legal


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        return [obj.numpy()]
    if isinstance(obj, (tuple, list)):
        return [t for v in obj for t in _tensors(v)]
    if hasattr(obj, "__dataclass_fields__"):
        return [t for name in obj.__dataclass_fields__ for t in _tensors(getattr(obj, name))]
    return []


def test_a_vocoder_stream_goes_on_from_an_unpickled_state():
    """The state crosses to the vocoder and back every round: continuing from its copy gives the same audio."""
    codec = build_codec(load_config("tiny").model.codec)
    units = torch.randint(0, codec.n_units, (15,), generator=torch.Generator().manual_seed(0)).tolist()
    first = vocode_batch(codec, [VocodeRequest(None, tuple(units[:5]))], output_rate=24_000)[0]
    request = VocodeRequest(first.state, tuple(units[5:10]))
    moved, data = _round_trip(request)
    assert TORCH_PICKLE not in data and isinstance(moved.state.resampler, StreamingResampler)
    _assert_same(request, moved)
    here = vocode_batch(codec, [request], output_rate=24_000)[0]
    there = vocode_batch(codec, [moved], output_rate=24_000)[0]
    torch.testing.assert_close(there.audio, here.audio, atol=0, rtol=0)
    result, data = _round_trip(there)
    assert TORCH_PICKLE not in data
    _assert_same(there, result)


def test_a_view_pickles_only_its_elements():
    """torch pickles a view with its whole storage; as an array only the view's elements go."""
    rows = torch.randn(64, 1024)[3]
    assert len(cloudpickle.dumps(packed(rows))) < 2 * rows.numel() * 4 < len(cloudpickle.dumps(rows))
    assert torch.equal(pickle.loads(cloudpickle.dumps(packed(rows))), rows)


def test_bfloat16_travels_as_its_bits():
    """The paper preset's hidden states and clip features are bfloat16, which NumPy cannot hold."""
    hidden = torch.randn(3, 896, dtype=torch.bfloat16)[1:]  # a view, too
    back, data = _round_trip(TextGroup((1, 2), ("a", "b"), hidden, None, 0))
    assert TORCH_PICKLE not in data and back.hidden.dtype == torch.bfloat16
    assert torch.equal(back.hidden, hidden) and len(data) < hidden.numel() * 2 + 1024


@pytest.mark.parametrize(
    "tensor",
    [torch.randn(3, requires_grad=True), torch.nn.Parameter(torch.randn(3))],
    ids=["requires_grad", "parameter"],
)
def test_grad_tensors_pickle_the_usual_way(tensor):
    back, data = _round_trip(TextGroup((), (), tensor, None, 0))
    assert TORCH_PICKLE in data
    assert type(back.hidden) is type(tensor) and back.hidden.dtype == tensor.dtype
    assert torch.equal(back.hidden.detach(), tensor.detach())


def test_copies_share_tensors_and_nested_values_round_trip():
    chunk = _messages()[3]
    assert copy.copy(chunk).audio is chunk.audio  # a shallow copy unwraps, never hands back a wrapper
    resampler = StreamingResampler(16_000, 24_000)
    resampler.push(torch.randn(700))
    assert copy.copy(resampler).pending is resampler.pending
    _assert_same(resampler, copy.deepcopy(resampler))
    nested = [torch.arange(3), (torch.ones(2, 2), "x")]
    back = pickle.loads(pickle.dumps(packed(nested)))
    _assert_same(nested, back)
