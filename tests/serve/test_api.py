"""The typed boundary: chat requests turned into library inputs, bad ones refused as OpenAI-style 400s."""

from __future__ import annotations

import base64
import io

import pytest
import soundfile as sf
from freezeempath.inference.dialogue import CheckedAudio
from helpers import speech_like

from serve.api import ApiError, ChatCompletionRequest, InputAudio, StoredAudio, audio_input, chat_plan
from serve.args import ServeArgs
from serve.stores import AudioStore


def _wav(seconds: float) -> str:
    buffer = io.BytesIO()
    sf.write(buffer, speech_like(seconds).numpy(), 16000, format="WAV")
    return base64.b64encode(buffer.getvalue()).decode()


def _audio_part(seconds: float = 0.5) -> dict:
    return {"type": "input_audio", "input_audio": {"data": _wav(seconds), "format": "wav"}}


def test_chat_plan_maps_roles_parts_and_audio_ids():
    store = AudioStore(capacity=4)
    store.put("audio_1", StoredAudio("I hear you.", expires_at=2**40, voice="alloy", emotion="sad", units=3))
    chat = ChatCompletionRequest.model_validate(
        {
            "model": "freezeempath",
            "modalities": ["text", "audio"],
            "audio": {"voice": "alloy", "format": "wav"},
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [_audio_part(), _audio_part(), {"type": "text", "text": "and this"}]},
                {"role": "assistant", "audio": {"id": "audio_1"}},
                {"role": "user", "content": "thanks"},
            ],
        }
    )
    plan = chat_plan(chat, ServeArgs(), store.get, max_seconds=8.0)
    assert plan.system_prompt == "Be brief." and plan.audio_out and plan.voice == "alloy"
    roles = [(m.role, m.text, m.audio is not None) for m in plan.messages]
    assert roles == [
        ("user", "", True),
        ("user", "and this", True),
        ("assistant", "I hear you.", False),
        ("user", "thanks", False),
    ]
    assert len(plan.clip_keys) == 2 and plan.clip_keys[0] == plan.clip_keys[1]  # same bytes, same key


@pytest.mark.parametrize(
    ("patch", "message", "param"),
    [
        ({"messages": [{"role": "assistant", "audio": {"id": "audio_gone"}}]}, "unknown or expired", "audio.id"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "unsupported role", "role"),
        ({"audio": {"voice": "robot", "format": "wav"}}, "unknown voice", "audio.voice"),
        ({"audio": {"voice": "alloy", "format": "aac"}}, "unsupported audio format", "audio.format"),
        ({"stream": True}, "must use format pcm16", "audio.format"),
        ({"max_completion_tokens": 10_000}, "exceeds the limit", "max_completion_tokens"),
    ],
)
def test_chat_plan_rejects_bad_requests(patch, message, param):
    body = {
        "model": "m",
        "modalities": ["text", "audio"],
        "audio": {"voice": "alloy", "format": "wav"},
        "messages": [{"role": "user", "content": "hi"}],
    }
    if "messages" in patch:
        patch = {"messages": patch["messages"] + body["messages"]}
    chat = ChatCompletionRequest.model_validate({**body, **patch})
    with pytest.raises(ApiError, match=message) as err:
        chat_plan(chat, ServeArgs(), AudioStore(4).get, max_seconds=8.0)
    assert err.value.status == 400 and param in (err.value.param or "")


def test_audio_input_checks_the_clip_once_and_names_the_part_it_refuses():
    clip, key = audio_input(InputAudio(data=_wav(0.5), format="wav"), "input_audio", max_seconds=8.0)
    assert isinstance(clip, CheckedAudio) and clip.sample_rate == 16_000 and clip.samples.shape == (8000,)
    assert len(key) == 64  # sha256 of the file bytes
    for data, fmt, message, param, code in [
        (_wav(2.0), "wav", "maximum is 1 s", "p.data", "invalid_audio"),
        ("!!", "wav", "not valid base64", "p.data", "invalid_base64"),
        (_wav(0.5), "aac", "unsupported input audio format", "p.format", "invalid_audio_format"),
        (base64.b64encode(b"not audio" * 8).decode(), "wav", "could not be decoded", "p.data", "invalid_audio"),
    ]:
        with pytest.raises(ApiError, match=message) as err:
            audio_input(InputAudio(data=data, format=fmt), "p", max_seconds=1.0)
        assert (err.value.status, err.value.param, err.value.code) == (400, param, code)


def test_server_failures_tell_the_client_what_to_do_and_no_internal_text():
    from ray.exceptions import ActorDiedError
    from ray.serve.exceptions import ReplicaUnavailableError

    from serve.api import StageFailure, server_failure

    class Wrapped(Exception):  # how a replica's error arrives: the original as ``cause``
        def __init__(self, cause: BaseException) -> None:
            super().__init__("Traceback (most recent call last): ... ray internals ...")
            self.cause = cause

    for err in (ActorDiedError(), Wrapped(ActorDiedError()), ReplicaUnavailableError("replica xyz gone")):
        answer = server_failure(err, retry_after_s=3)
        assert (answer.status, answer.code, answer.headers) == (503, "replica_unavailable", {"Retry-After": "3"})
        assert answer.message == "a model replica is unavailable; retry shortly"
    stage = server_failure(StageFailure("the LLM stream failed: RayTaskError(...)"))
    assert (stage.status, stage.code, stage.headers["Retry-After"]) == (503, "stage_failed", "1")
    assert "RayTaskError" not in stage.message
    bug = server_failure(Wrapped(KeyError("secret internal detail")))
    assert (bug.status, bug.code, bug.message) == (500, "internal_error", "internal error: KeyError")
    assert bug.headers == {"x-should-retry": "false"} and set(bug.body()["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }
