"""OpenAI-compatible HTTP ingress (FastAPI via ``@serve.ingress``): auth, limits, chat, SSE, audio ids.

In: HTTP requests (``docs/api-shapes.md`` §1–§3). Out: JSON or SSE ``chat.completion.chunk`` events.
Endpoints: ``GET /healthz``; ``GET /v1/models``; ``POST /v1/chat/completions`` (text and ``input_audio``
wav/mp3/flac in; text, or audio + transcript out; ``stream: true`` sends transcript pieces and 24 kHz
pcm16 chunks as they are vocoded); ``POST /v1/audio/emotion`` (extension: ``{"input_audio": {"data",
"format"}}`` → ``{"object": "audio.emotion", "label", "scores"}``). Replies carry the detected emotion in
``x_emotion`` (non-streaming body; first chunk when streaming) and timings in ``x_timing``.

Errors are ``{"error": {"message", "type", "param", "code"}}``: bad input 400 (library ``ValueError`` too),
bad key 401, unknown model 404 ``model_not_found``, body too large 413, over ``max_concurrent_requests``
429 + ``Retry-After``; 503 + ``Retry-After`` for a full inner queue (``max_queued_requests`` of a
deployment), a lost or unavailable replica (``replica_unavailable``) and a stage that fails before the
first chunk (``stage_failed``); anything else 500 ``internal_error`` naming only the error's type, with
``x-should-retry: false``. A failure after streaming began is sent as ``data: {"error": …}`` with the
same codes. Internal text goes to the log, never to the client.
Each reply logs its time to first audio and total time (logger ``ray.serve``)::

    serve run --address local serve/configs/local.yaml
    curl -s 127.0.0.1:8765/v1/models -H "Authorization: Bearer $KEY"
"""

# No ``from __future__ import annotations`` here: FastAPI must see real classes (``Request``) in the
# signatures of the ingress methods, which Serve rewraps; string annotations make it a query parameter.
import asyncio
import base64
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from freezeempath.inference.audio_io import encode_audio, pcm16_bytes
from freezeempath.inference.dialogue import EmotionResult, prepare_dialogue
from freezeempath.inference.speech_session import SpeechChunk
from freezeempath.inference.understanding import ClipFeatures, generation_request
from freezeempath.inference.wire import packed
from pydantic import BaseModel, ValidationError
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException

from serve.api import (
    ApiError,
    ChatCompletionRequest,
    ChatPlan,
    EmotionRequest,
    StageFailure,
    StoredAudio,
    audio_input,
    chat_plan,
    server_failure,
)
from serve.args import ServeArgs
from serve.deployments.replica import set_cpu_priority
from serve.stores import AudioStore, ClipCache

log = logging.getLogger("ray.serve")
SPEAKS_IN = "one voice, the codec's: every accepted voice name speaks in it"
app = FastAPI(title="FreezeEmpath", docs_url=None, redoc_url=None)
Body = TypeVar("Body", bound=BaseModel)


@app.exception_handler(ApiError)
async def _api_error(_: Request, err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


@app.exception_handler(HTTPException)
async def _http_error(_: Request, err: HTTPException) -> JSONResponse:
    return JSONResponse(ApiError(err.status_code, str(err.detail)).body(), status_code=err.status_code)


@app.exception_handler(ValueError)
async def _bad_value(_: Request, err: ValueError) -> JSONResponse:
    """The library's ``ValueError`` names bad input (a replica's arrives wrapped; its ``cause`` is the original)."""
    return JSONResponse(ApiError(400, str(getattr(err, "cause", err))).body(), status_code=400)


@app.exception_handler(BackPressureError)
async def _overloaded(_: Request, err: BackPressureError) -> JSONResponse:
    body = ApiError(503, "the model is overloaded; retry shortly", type="server_error", code="overloaded").body()
    return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})


@app.exception_handler(Exception)
async def _server_error(_: Request, err: Exception) -> JSONResponse:
    log.error("request failed: %r", err)
    answer = server_failure(err)
    return JSONResponse(answer.body(), status_code=answer.status, headers=answer.headers)


def check_api_key(authorization: str | None, keys: frozenset[str]) -> None:
    """Accept any request when no keys are configured; else require ``Authorization: Bearer <key>``."""
    if not keys:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not any(hmac.compare_digest(token.strip(), k) for k in keys):
        raise ApiError(
            401,
            "invalid or missing API key (send Authorization: Bearer <key>)",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 once it passes ``limit`` bytes (before reading it all when declared)."""
    declared = request.headers.get("content-length", "")
    too_large = ApiError(413, f"request body exceeds the limit of {limit} bytes", code="request_too_large")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    parts, total = [], 0
    async for part in request.stream():
        total += len(part)
        if total > limit:
            raise too_large
        parts.append(part)
    return b"".join(parts)


def parse(model: type[Body], body: bytes) -> Body:
    """Validate a JSON body; the most specific problem becomes a 400 naming its field and the reason."""
    try:
        return model.model_validate_json(body)
    except ValidationError as err:
        where, reasons = body_error(err.errors())
        message = f"{where}: {reasons}" if where else reasons
        raise ApiError(400, message, param=where or None) from None


def body_error(errors: list[Any]) -> tuple[str, str]:
    """Pydantic errors → the deepest field path (union member tags such as ``str`` or ``list[...]`` left out)
    and its reasons: one per alternative of a union that failed there, joined by ", or "."""
    located = [(tuple(str(x) for x in e["loc"] if not _union_tag(x)), e["msg"]) for e in errors]
    deepest = max(len(loc) for loc, _ in located)
    where = next(loc for loc, _ in located if len(loc) == deepest)
    reasons = dict.fromkeys(msg for loc, msg in located if loc == where)
    return ".".join(where), ", or ".join(reasons)


def _union_tag(part: Any) -> bool:
    """Pydantic names the union member it tried in the error path (``str``, ``list[ContentPart]``, …)."""
    return isinstance(part, str) and (part in {"str", "int", "float", "bool", "list", "dict"} or "[" in part)


@dataclass
class ReplyInFlight:
    """One chat reply in flight: its request and plan, the decoder's stream, and what has come so far."""

    chat: ChatCompletionRequest
    plan: ChatPlan
    emotion: EmotionResult | None
    stream: Any
    first: SpeechChunk
    audio_rows: int
    started: float
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    audio_id: str = field(default_factory=lambda: f"audio_{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    first_audio: float | None = None
    finished: bool = False
    transcript: str = ""
    tokens: int = 0
    units: int = 0
    finish: str = "stop"


def _data(obj: dict[str, Any]) -> str:
    """One SSE event."""
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


def _emotion(e: EmotionResult | None) -> dict[str, Any] | None:
    return {"label": e.label.value, "scores": e.scores} if e is not None else None


# Everything the routes use is defined above: @serve.ingress snapshots the app when the class is made.
@serve.deployment
@serve.ingress(app)
class Gateway:
    """The HTTP ingress; holds handles to understanding and the decoder (which vocodes), and the audio-id store."""

    def __init__(self, understanding: DeploymentHandle, decoder: DeploymentHandle, args: ServeArgs) -> None:
        set_cpu_priority()
        self.args, self.keys, self.limits = args, args.keys(), args.limits
        gen = args.model.resolve().model
        self.max_seconds = min(args.limits.max_audio_seconds, gen.encoder.max_input_seconds)
        self.temperature, self.seed = gen.generation.temperature, gen.generation.seed
        self.understanding = understanding.options(_by_reference=not args.low_latency)
        self.decoder = decoder.options(stream=True, _by_reference=not args.low_latency)
        self.store = AudioStore(args.limits.max_stored_audio)
        self.clips = ClipCache(args.limits.clip_cache_size, args.limits.clip_cache_bytes)
        self.active = 0  # chat requests in flight (the concurrency limit)
        self.emotions = 0  # emotion requests in flight

    def _alone(self) -> bool:
        """Whether the request asking is the only one in flight: then no batch-mate can come, and the
        deployments skip their batch waits (``alone=True``). Counted per gateway replica (the configs run
        one); with more, a lone request in one replica only forgoes batching with another's."""
        return self.active + self.emotions <= 1

    @app.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        """Liveness (no auth)."""
        return {"status": "ok", "active_requests": self.active}

    @app.get("/v1/models")
    async def models(self, request: Request) -> dict[str, Any]:
        """The one public model id."""
        check_api_key(request.headers.get("authorization"), self.keys)
        entry = {"id": self.args.model_id, "object": "model", "created": 0, "owned_by": "freezeempath"}
        entry["x_audio"] = {"voices": self.args.voices, "speaks_in": SPEAKS_IN}
        return {"object": "list", "data": [entry]}

    @app.post("/v1/audio/emotion")
    async def emotion(self, request: Request) -> dict[str, Any]:
        """Detected emotion of one clip."""
        check_api_key(request.headers.get("authorization"), self.keys)
        body = parse(EmotionRequest, await read_body(request, self.limits.max_body_bytes))
        clip, key = audio_input(body.input_audio, "input_audio", self.max_seconds)
        self.emotions += 1
        try:
            features = await self._understand([torch.as_tensor(clip.samples)], [key])
        finally:
            self.emotions -= 1
        return {"object": "audio.emotion", **(_emotion(features[0].emotion_result) or {})}

    @app.post("/v1/chat/completions")
    async def chat(self, request: Request) -> Response:
        """Chat completion, streamed (SSE) or whole."""
        check_api_key(request.headers.get("authorization"), self.keys)
        chat = parse(ChatCompletionRequest, await read_body(request, self.limits.max_body_bytes))
        if chat.model != self.args.model_id:
            message = f"The model {chat.model[:200]!r} does not exist; GET /v1/models lists {self.args.model_id!r}"
            raise ApiError(404, message, param="model", code="model_not_found")
        if self.active >= self.limits.max_concurrent_requests:
            retry = {"Retry-After": str(self.limits.retry_after_s)}
            message = "too many concurrent requests; retry shortly"
            raise ApiError(429, message, type="rate_limit_error", code="rate_limit_exceeded", headers=retry)
        self.active += 1
        streaming = False
        try:
            reply = await self._start(chat, time.perf_counter())
            if chat.stream:
                streaming = True  # the stream releases its slot when it ends
                return StreamingResponse(self._sse(reply), media_type="text/event-stream")
            return JSONResponse(await self._complete(reply))
        finally:
            if not streaming:
                self.active -= 1

    async def _start(self, chat: ChatCompletionRequest, started: float) -> ReplyInFlight:
        plan = chat_plan(chat, self.args, self.store.get, self.max_seconds)
        try:  # the plan's clips were checked by ``audio_input``: this checks the dialogue's shape only
            prepared = prepare_dialogue(plan.messages, self.max_seconds)
        except ValueError as err:
            raise ApiError(400, str(err), param="messages") from None
        features = await self._understand(prepared.clips, plan.clip_keys)
        request = generation_request(
            prepared,
            features,
            max_new_tokens=plan.max_new_tokens,
            temperature=self.temperature if chat.temperature is None else chat.temperature,
            seed=self.seed if chat.seed is None else chat.seed,
            speech_output=plan.audio_out,
            system_prompt=plan.system_prompt,
            max_prompt_tokens=self.limits.max_prompt_tokens,
        )
        stream = self.decoder.stream.remote(request, alone=self._alone())
        first = await stream.__anext__()  # a ValueError here is answered 400 by the app's handler
        if first.error is not None and first.server_fault:  # a stage failed: the request was fine
            log.error("a stage failed before the reply began: %s", first.error)
            retry = {"Retry-After": str(self.limits.retry_after_s)}
            message = "a pipeline stage failed before the reply began; retry shortly"
            raise ApiError(503, message, type="server_error", code="stage_failed", headers=retry)
        if first.error is not None:
            raise ApiError(400, first.error, param="messages")
        emotion = features[-1].emotion_result if plan.messages[-1].audio is not None else None
        rows = sum(f.speech.shape[0] + 1 for f in features)
        return ReplyInFlight(chat, plan, emotion, stream, first, rows, started)

    async def _understand(self, clips: list[torch.Tensor], keys: list[str]) -> list[ClipFeatures]:
        """Clip features, from the content-hash cache or one understanding call per clip (batched there)."""
        cached = [self.clips.get(k) for k in keys]
        todo = [i for i, f in enumerate(cached) if f is None]
        alone = len(todo) == 1 and self._alone()  # several clips of one request batch together
        calls = (self.understanding.understand.remote(packed(clips[i]), alone=alone) for i in todo)  # clip as an array
        found = await asyncio.gather(*calls)
        fresh = dict(zip((keys[i] for i in todo), found, strict=True))
        result = [fresh.get(k, f) for k, f in zip(keys, cached, strict=True)]
        for key, features in zip(keys, result, strict=True):
            self.clips.put(key, features)
        return result

    async def _parts(self, reply: ReplyInFlight) -> AsyncIterator[tuple[SpeechChunk, torch.Tensor | None]]:
        """Decoder chunks with their audio, vocoded by the decoder's batch (the first after W units)."""
        chunk = reply.first
        while True:
            if chunk.error is not None:
                raise StageFailure(chunk.error)
            final, audio = chunk.finish_reason is not None, chunk.audio if reply.plan.audio_out else None
            if audio is not None and audio.numel() and reply.first_audio is None:
                reply.first_audio = time.perf_counter() - reply.started
            reply.transcript += chunk.text
            reply.tokens, reply.units = reply.tokens + len(chunk.token_ids), reply.units + len(chunk.units)
            yield chunk, audio
            if final:
                reply.finish, reply.finished = chunk.finish_reason.value, True  # type: ignore[union-attr]
                return
            try:
                chunk = await reply.stream.__anext__()
            except StopAsyncIteration:  # never inside an async generator: Python turns it into a bare RuntimeError
                raise RuntimeError("the speech decoder ended the reply without its final chunk") from None

    async def _complete(self, reply: ReplyInFlight) -> dict[str, Any]:
        try:
            audio = [a async for _, a in self._parts(reply) if a is not None]
        finally:
            if not reply.finished:
                reply.stream.cancel()
        message: dict[str, Any] = {"role": "assistant", "content": reply.transcript, "refusal": None}
        if reply.plan.audio_out:
            fmt = reply.plan.audio_format or "wav"
            data = encode_audio(torch.cat(audio) if audio else torch.zeros(0), self.args.output_sample_rate, fmt)
            expires = self._store(reply)
            message["content"] = None
            message["audio"] = {
                "id": reply.audio_id,
                "data": base64.b64encode(data).decode(),
                "expires_at": expires,
                "transcript": reply.transcript,
            }
        total = self._log(reply, stream=False)
        return {
            **self._envelope(reply, "chat.completion"),
            "choices": [{"index": 0, "message": message, "finish_reason": reply.finish, "logprobs": None}],
            "usage": self._usage(reply),
            "x_emotion": _emotion(reply.emotion),
            "x_timing": {"first_audio_s": reply.first_audio, "total_s": total},
        }

    async def _sse(self, reply: ReplyInFlight) -> AsyncIterator[str]:
        audio_out = reply.plan.audio_out
        try:
            # the role event leaves with the first chunk's events (``_start`` awaited that chunk, so there
            # always is one): one message to the proxy less before the first audio
            events = self._event(reply, {"role": "assistant", "content": None}, x_emotion=_emotion(reply.emotion))
            async for chunk, audio in self._parts(reply):
                # a chunk's transcript and audio events leave in one write: one message to the proxy
                if chunk.text:
                    delta = {"audio": {"id": reply.audio_id, "transcript": chunk.text}} if audio_out else {}
                    events += self._event(reply, delta or {"content": chunk.text})
                if audio is not None and audio.numel():
                    data = base64.b64encode(pcm16_bytes(audio)).decode()
                    events += self._event(reply, {"audio": {"id": reply.audio_id, "data": data}})
                if events:
                    yield events
                events = ""
            if audio_out:
                yield self._event(reply, {"audio": {"id": reply.audio_id, "expires_at": self._store(reply)}})
            yield self._event(reply, {}, finish_reason=reply.finish)
            options = reply.chat.stream_options
            if options is not None and options.include_usage:
                usage = {"choices": [], "usage": self._usage(reply)}
                yield _data({**self._envelope(reply, "chat.completion.chunk"), **usage})
            yield "data: [DONE]\n\n"
            self._log(reply, stream=True)
        except Exception as err:  # after the 200 began: report in-band, as the SDK expects
            log.exception("chat %s failed mid-stream", reply.id)
            yield _data(server_failure(err, self.limits.retry_after_s).body())
        finally:
            self.active -= 1
            if not reply.finished:  # client gone or failure: stop this stream's generator chain
                reply.stream.cancel()

    def _store(self, reply: ReplyInFlight) -> int:
        expires = int(time.time()) + self.limits.audio_ttl_s
        voice = reply.plan.voice or ""
        label = reply.emotion.label.value if reply.emotion else None
        self.store.put(reply.audio_id, StoredAudio(reply.transcript, expires, voice, label, reply.units))
        return expires

    def _envelope(self, reply: ReplyInFlight, obj: str) -> dict[str, Any]:
        return {"id": reply.id, "object": obj, "created": reply.created, "model": reply.chat.model}

    def _event(
        self, reply: ReplyInFlight, delta: dict[str, Any], finish_reason: str | None = None, **extra: Any
    ) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return _data({**self._envelope(reply, "chat.completion.chunk"), "choices": [choice], **extra})

    def _usage(self, reply: ReplyInFlight) -> dict[str, Any]:
        prompt = reply.first.prompt_tokens
        return {
            "prompt_tokens": prompt,
            "completion_tokens": reply.tokens,
            "total_tokens": prompt + reply.tokens,
            "prompt_tokens_details": {"audio_tokens": reply.audio_rows},
            "completion_tokens_details": {"audio_tokens": reply.units},
        }

    def _log(self, reply: ReplyInFlight, stream: bool) -> float:
        total = time.perf_counter() - reply.started
        first = f"{reply.first_audio:.3f} s" if reply.first_audio is not None else "none"
        log.info(
            "chat %s stream=%s first_audio=%s total=%.3f s tokens=%d units=%d",
            reply.id,
            stream,
            first,
            total,
            reply.tokens,
            reply.units,
        )
        return round(total, 4)
