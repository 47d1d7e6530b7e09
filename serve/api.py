"""The OpenAI side of the Serve app: request and error models, and requests turned into library inputs.

In: request JSON bodies (``docs/api-shapes.md`` §1–§3), validated as Pydantic models. Out:
:func:`chat_plan` turns a chat request into library inputs (:class:`~freezeempath.inference.dialogue.Message`
list with checked clips, system prompt, output settings) or raises :class:`ApiError` (an OpenAI-style
error with status, message, type, param and code); :func:`audio_input` decodes and checks one clip::

    serve run --address local serve/configs/local.yaml       # the gateway (serve/gateway.py) answers with these
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from freezeempath.inference.audio_io import INPUT_FORMATS, UnsupportedRate, decode_input_audio, output_formats
from freezeempath.inference.dialogue import CheckedAudio, Message, check_audio
from pydantic import BaseModel, Field

from serve.args import ServeArgs


class ApiError(Exception):
    """An error answered as ``{"error": {message, type, param, code}}`` with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # OpenAI's field name
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class StageFailure(RuntimeError):
    """A pipeline stage failed a reply that had begun (the decoder's error chunk, its text kept for the log)."""


def server_failure(err: BaseException, retry_after_s: int = 1) -> ApiError:
    """What a client is told when serving failed, never the internal text: a lost or unavailable replica
    (also one a downstream stage hit: a replica's error arrives wrapped, with the original as ``cause``) is
    a 503 to retry after ``retry_after_s``; anything else a 500 naming only the error's type."""
    from ray.exceptions import RayActorError
    from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError

    lost = (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError)
    cause = getattr(err, "cause", None) or err
    retry = {"Retry-After": str(retry_after_s)}
    if isinstance(err, lost) or isinstance(cause, lost):
        message = "a model replica is unavailable; retry shortly"
        return ApiError(503, message, type="server_error", code="replica_unavailable", headers=retry)
    if isinstance(err, StageFailure):
        return ApiError(
            503, "a pipeline stage failed the reply; retry", type="server_error", code="stage_failed", headers=retry
        )
    message = f"internal error: {type(cause).__name__}"
    return ApiError(500, message, type="server_error", code="internal_error", headers={"x-should-retry": "false"})


class InputAudio(BaseModel):
    """``input_audio``: base64 file bytes and their declared format."""

    data: str
    format: str


class ContentPart(BaseModel):
    """A content part; only ``text`` and ``input_audio`` are accepted (checked in :func:`chat_plan`)."""

    type: str
    text: str | None = None
    input_audio: InputAudio | None = None


class AudioRef(BaseModel):
    """An earlier assistant reply's audio, by id."""

    id: str


class ChatMessage(BaseModel):
    """One chat message (unknown fields ignored)."""

    role: str
    content: str | list[ContentPart] | None = None
    audio: AudioRef | None = None


class VoiceRef(BaseModel):
    """A custom voice by id."""

    id: str


class AudioParams(BaseModel):
    """Requested output audio."""

    voice: str | VoiceRef
    format: str


class StreamOptions(BaseModel):
    """``stream_options``."""

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions`` body (unknown fields ignored)."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    modalities: list[Literal["text", "audio"]] | None = None
    audio: AudioParams | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_completion_tokens: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    n: int | None = Field(None, ge=1, le=1)


class EmotionRequest(BaseModel):
    """``POST /v1/audio/emotion`` body: one clip."""

    input_audio: InputAudio


@dataclass(frozen=True)
class StoredAudio:
    """What the gateway keeps per assistant audio id until ``expires_at``."""

    transcript: str
    expires_at: int
    voice: str
    emotion: str | None
    units: int


@dataclass(frozen=True)
class ChatPlan:
    """A validated chat request in library terms; ``clip_keys`` hash each audio message's input."""

    messages: list[Message]
    clip_keys: list[str]
    system_prompt: str | None
    audio_out: bool
    voice: str | None
    audio_format: str | None
    max_new_tokens: int


def audio_input(part: InputAudio, param: str, max_seconds: float) -> tuple[CheckedAudio, str]:
    """Decode and check one ``input_audio`` part → a mono 16 kHz clip and its content key (sha256).

    The clip is checked here, where a bad one is answered 400 naming its part; ``prepare_dialogue`` takes
    the :class:`~freezeempath.inference.dialogue.CheckedAudio` without checking it again.
    """
    if part.format not in INPUT_FORMATS:
        supported = ", ".join(INPUT_FORMATS)
        raise ApiError(
            400,
            f"unsupported input audio format {part.format!r}; supported: {supported}",
            param=f"{param}.format",
            code="invalid_audio_format",
        )
    try:
        data = base64.b64decode(part.data, validate=True)
    except (binascii.Error, ValueError):
        message = "input_audio.data is not valid base64"
        raise ApiError(400, message, param=f"{param}.data", code="invalid_base64") from None
    try:
        clip = check_audio(decode_input_audio(data, part.format, max_seconds), max_seconds)
    except UnsupportedRate as err:
        raise ApiError(400, str(err), param=f"{param}.data", code="unsupported_sample_rate") from None
    except ValueError as err:
        raise ApiError(400, str(err), param=f"{param}.data", code="invalid_audio") from None
    return clip, hashlib.sha256(data).hexdigest()


def _text(message: ChatMessage, i: int) -> str:
    if isinstance(message.content, str) or message.content is None:
        return message.content or ""
    bad = [p.type for p in message.content if p.type != "text"]
    if bad:
        raise ApiError(400, f"{message.role} messages take text content only, got {bad[0]!r}", param=f"messages[{i}]")
    return "\n".join(p.text or "" for p in message.content)


def _user(message: ChatMessage, i: int, max_seconds: float) -> tuple[list[Message], list[str]]:
    """Each ``input_audio`` part becomes one spoken turn; text parts follow the message's last clip."""
    parts = message.content if isinstance(message.content, list) else [ContentPart(type="text", text=message.content)]
    clips, keys, text = [], [], []
    for j, part in enumerate(parts):
        param = f"messages[{i}].content[{j}]"
        if part.type == "text":
            text.append(part.text or "")
        elif part.type == "input_audio" and part.input_audio is not None:
            clip, key = audio_input(part.input_audio, f"{param}.input_audio", max_seconds)
            clips.append(clip)
            keys.append(key)
        else:
            raise ApiError(400, f"unsupported content part type {part.type!r} (text, input_audio)", param=param)
    joined = " ".join(t for t in text if t.strip())
    if not clips and not joined.strip():
        raise ApiError(400, f"message {i} is empty (no text and no audio)", param=f"messages[{i}].content")
    if not clips:
        return [Message("user", joined)], []
    out = [Message("user", audio=c) for c in clips[:-1]] + [Message("user", joined, clips[-1])]
    return out, keys


def _assistant(message: ChatMessage, i: int, lookup: Any) -> Message:
    text = _text(message, i)
    if message.audio is not None:
        stored = lookup(message.audio.id)
        if stored is None and not text.strip():
            raise ApiError(
                400,
                f"audio id {message.audio.id!r} is unknown or expired; send the reply's transcript as content",
                param=f"messages[{i}].audio.id",
            )
        text = stored.transcript if stored is not None else text
    if not text.strip():
        raise ApiError(400, f"assistant message {i} is empty (no content and no audio id)", param=f"messages[{i}]")
    return Message("assistant", text)


def chat_plan(chat: ChatCompletionRequest, args: ServeArgs, lookup: Any, max_seconds: float) -> ChatPlan:
    """Validate a chat request and convert it; ``lookup(audio_id) -> StoredAudio | None``.

    ``max_seconds`` caps each clip (the smaller of the limit and the encoder window).
    """
    if len(chat.messages) > args.limits.max_messages:
        raise ApiError(400, f"too many messages ({len(chat.messages)} > {args.limits.max_messages})", param="messages")
    audio_out = "audio" in (chat.modalities or ["text"])
    voice, fmt = _output_audio(chat, args) if audio_out else (None, None)
    system, messages, keys = [], [], []
    for i, message in enumerate(chat.messages):
        if message.role in ("system", "developer"):
            system.append(_text(message, i))
        elif message.role == "user":
            msgs, clip_keys = _user(message, i, max_seconds)
            messages += msgs
            keys += clip_keys
        elif message.role == "assistant":
            messages.append(_assistant(message, i, lookup))
        else:
            raise ApiError(
                400,
                f"unsupported role {message.role!r} (system, developer, user, assistant)",
                param=f"messages[{i}].role",
            )
    budget = chat.max_completion_tokens or chat.max_tokens or args.limits.max_completion_tokens
    if budget > args.limits.max_completion_tokens:
        raise ApiError(
            400,
            f"max_completion_tokens {budget} exceeds the limit {args.limits.max_completion_tokens}",
            param="max_completion_tokens",
        )
    system_prompt = "\n".join(system) if system else None
    return ChatPlan(messages, keys, system_prompt, audio_out, voice, fmt, budget)


def _output_audio(chat: ChatCompletionRequest, args: ServeArgs) -> tuple[str, str]:
    if chat.audio is None:
        raise ApiError(400, 'audio (voice and format) is required when modalities include "audio"', param="audio")
    voice = chat.audio.voice if isinstance(chat.audio.voice, str) else chat.audio.voice.id
    if voice not in args.voices:
        raise ApiError(400, f"unknown voice {voice!r}; available: {', '.join(args.voices)}", param="audio.voice")
    if chat.audio.format not in output_formats():
        supported = ", ".join(output_formats())
        raise ApiError(
            400, f"unsupported audio format {chat.audio.format!r}; supported: {supported}", param="audio.format"
        )
    if chat.stream and chat.audio.format != "pcm16":
        raise ApiError(400, f"streaming audio must use format pcm16, got {chat.audio.format!r}", param="audio.format")
    return voice, chat.audio.format
