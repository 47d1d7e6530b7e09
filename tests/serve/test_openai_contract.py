"""The OpenAI contract against a tiny-preset Serve app on 127.0.0.1:8765, with the official SDK.

One local Ray + Serve app for the module (api-shapes.md §7): models, chat with input audio (whole and
streamed), multi-turn audio ids, emotion, bad input → 400 naming the problem, limits, and a server that
keeps serving afterwards.
"""

from __future__ import annotations

import base64
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import soundfile as sf
import yaml
from freezeempath.labels import LABEL_WORDS
from helpers import ROOT, serve_on_loopback, unslotted_request, wav_b64

pytestmark = pytest.mark.ray

URL = "http://127.0.0.1:8765"
MAX_BODY = 2 * 2**20


def tiny_args():
    """``serve/configs/local.yaml`` args with the tiny preset, one replica each (two LLMs), small limits."""
    from serve.args import ServeArgs

    args = yaml.safe_load((ROOT / "serve" / "configs" / "local.yaml").read_text())["applications"][0]["args"]
    args["model"].update(config="tiny", overrides=["model.generation.max_new_tokens=12"])
    args["limits"].update(max_audio_seconds=8, max_completion_tokens=12, max_body_bytes=MAX_BODY)
    args["limits"].update(max_concurrent_requests=2, retry_after_s=1)
    for options in args["deployments"].values():
        options.pop("autoscaling_config", None)
        options["num_replicas"] = 1
    # two LLM replicas: a call runs on one of them, and what concerns it (``LLM.drop``) must reach it
    args["deployments"]["llm"].update(num_replicas=2, ray_actor_options={"num_cpus": 0.25})
    return ServeArgs.model_validate(args)


@pytest.fixture(scope="module")
def server():
    from serve.app import build_app

    for serve in serve_on_loopback(8765):
        serve.run(build_app(tiny_args()), name="freezeempath", route_prefix="/")
        yield URL


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="test", max_retries=0, timeout=60)


def spoken(data: str | None = None, fmt: str = "wav", text: str | None = None) -> dict:
    parts = [{"type": "input_audio", "input_audio": {"data": wav_b64() if data is None else data, "format": fmt}}]
    return {"role": "user", "content": parts + ([{"type": "text", "text": text}] if text else [])}


AUDIO = {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}


def test_models_list(client):
    (model,) = client.models.list()
    assert model.id == "freezeempath" and {"default", "alloy"} <= set(model.x_audio["voices"])
    assert "one voice" in model.x_audio["speaks_in"]  # the API says plainly which voice it speaks in


def test_chat_with_input_audio_returns_audio_transcript_and_emotion(client):
    reply = client.chat.completions.create(model="freezeempath", messages=[spoken()], **AUDIO)
    choice = reply.choices[0]
    audio = choice.message.audio
    assert audio.id.startswith("audio_") and audio.expires_at > reply.created and isinstance(audio.transcript, str)
    samples, rate = sf.read(io.BytesIO(base64.b64decode(audio.data)))
    assert rate == 24_000 and samples.ndim == 1 and samples.size > 0
    assert choice.message.content is None and choice.finish_reason in ("stop", "length")
    assert reply.id.startswith("chatcmpl-") and reply.model == "freezeempath"
    assert reply.x_emotion["label"] in LABEL_WORDS and abs(sum(reply.x_emotion["scores"].values()) - 1) < 1e-3
    assert reply.usage.completion_tokens <= 12 and reply.usage.completion_tokens_details.audio_tokens > 0
    assert 0 < reply.x_timing["first_audio_s"] <= reply.x_timing["total_s"]


def _delta_audio(chunk) -> dict:
    audio = chunk.choices[0].delta.audio if chunk.choices else None
    if audio is None:
        return {}
    return {k: v for k, v in (audio if isinstance(audio, dict) else audio.model_dump()).items() if v is not None}


def _pcm16_stream(client, **extra):
    return client.chat.completions.create(
        model="freezeempath",
        messages=[spoken()],
        stream=True,
        modalities=["text", "audio"],
        audio={"voice": "alloy", "format": "pcm16"},
        **extra,
    )


def _hang_up_after_first_audio(client) -> None:
    stream = _pcm16_stream(client)
    next(c for c in stream if "data" in _delta_audio(c))
    stream.close()


def _decoder():
    from ray import serve

    return serve.get_deployment_handle("SpeechDecoding", app_name="freezeempath")


def _understanding():
    from ray import serve

    return serve.get_deployment_handle("SpeechUnderstanding", app_name="freezeempath")


def _wait_until_idle(server, timeout_s: float = 30) -> tuple[dict, dict]:
    """Poll until no decoder session runs or waits and no request is active; the last decoder stats and /healthz."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats, health = _decoder().stats.remote().result(), httpx.get(f"{server}/healthz").json()
        idle = stats["sessions"] == stats["waiting"] == health["active_requests"] == 0
        if idle or time.monotonic() > deadline:
            return stats, health
        time.sleep(0.05)


def test_streaming_sends_role_transcript_pcm16_finish_and_usage(client):
    chunks = list(_pcm16_stream(client, stream_options={"include_usage": True}))
    first = chunks[0]
    assert first.choices[0].delta.role == "assistant" and first.model_extra["x_emotion"]["label"] in LABEL_WORDS
    deltas = [_delta_audio(c) for c in chunks]
    transcripts = [i for i, d in enumerate(deltas) if "transcript" in d]
    data = [base64.b64decode(d["data"]) for d in deltas if "data" in d]
    assert transcripts and data and all(len(d) % 2 == 0 for d in data)
    first_data = next(i for i, d in enumerate(deltas) if "data" in d)
    assert first_data < transcripts[-1], "audio must stream while the transcript is still arriving"
    assert any("expires_at" in d for d in deltas)
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    assert len({c.id for c in chunks}) == 1


def test_client_leaving_mid_stream_drops_its_decoder_stream(server, client):
    before = _decoder().stats.remote().result()["dropped"]
    _hang_up_after_first_audio(client)
    stats, health = _wait_until_idle(server)
    assert (stats["sessions"], stats["waiting"], stats["dropped"]) == (0, 0, before + 1)
    assert health == {"status": "ok", "active_requests": 0}
    assert client.chat.completions.create(model="freezeempath", messages=[spoken()], **AUDIO).choices


def test_only_a_lone_request_skips_the_batch_waits(server, client):
    def chat(seed: int) -> None:  # a clip never sent before: the gateway's clip cache cannot answer it
        client.chat.completions.create(model="freezeempath", messages=[spoken(wav_b64(seed=seed))], **AUDIO)

    def counts() -> tuple[int, int, int]:
        understood, decoder = _understanding().stats.remote().result(), _decoder().stats.remote().result()
        return understood["alone"], understood["batched"], decoder["unwaited"]

    _wait_until_idle(server)
    first = counts()
    chat(seed=101)
    alone = counts()
    assert [b - a for a, b in zip(first, alone, strict=True)] == [1, 0, 1]
    with ThreadPoolExecutor(2) as pool:  # sent together: the later one finds the other in flight and waits
        list(pool.map(chat, (102, 103)))
    together = [b - a for a, b in zip(alone, counts(), strict=True)]
    assert together[0] + together[1] == 2 and together[1] >= 1 and together[2] <= 1


def test_a_reply_joins_a_running_batch_and_equals_itself_alone(server, client):
    from freezeempath.chat_template import Turn
    from freezeempath.inference.llm_session import GenerationRequest

    def ask():  # the same clip and seed each time
        return client.chat.completions.create(
            model="freezeempath", messages=[spoken(wav_b64(seed=104))], seed=9, **AUDIO
        )

    def joined() -> int:
        return _decoder().stats.remote().result()["joined"]

    alone, before = ask(), joined()
    long = GenerationRequest(turns=(Turn("user", "tell me a story"),), max_new_tokens=240, temperature=1.0, seed=1)
    running = iter(_decoder().options(stream=True).stream.remote(long))  # seconds of decoding: far longer than ask()
    first = next(running)
    late = ask()
    rest = list(running)
    assert joined() == before + 1, "the reply sent while a batch ran must join it"
    assert first.error is None and rest[-1].finish_reason is not None and all(c.error is None for c in rest)
    mine, theirs = late.choices[0].message.audio, alone.choices[0].message.audio
    assert mine.transcript == theirs.transcript
    assert late.usage.completion_tokens_details.audio_tokens == alone.usage.completion_tokens_details.audio_tokens


def test_a_reply_the_llm_cannot_start_ends_in_an_error_chunk_and_serving_goes_on(server, client):
    chunks = list(_decoder().options(stream=True).stream.remote(unslotted_request()))
    assert len(chunks) == 1 and "the LLM stream failed" in (chunks[0].error or "")
    assert chunks[0].server_fault  # a failed stage: a first chunk like this is answered 500, not 400
    stats, health = _wait_until_idle(server)
    assert (stats["sessions"], stats["waiting"]) == (0, 0) and health == {"status": "ok", "active_requests": 0}
    assert client.chat.completions.create(model="freezeempath", messages=[spoken()], **AUDIO).choices


def test_a_reply_that_cannot_join_a_running_batch_fails_alone(server):
    from freezeempath.chat_template import Turn
    from freezeempath.inference.llm_session import GenerationRequest

    long = GenerationRequest(turns=(Turn("user", "tell me a story"),), max_new_tokens=240, temperature=1.0, seed=1)
    running = iter(_decoder().options(stream=True).stream.remote(long))
    first = next(running)
    joined = _decoder().stats.remote().result()["joined"]
    broken = list(_decoder().options(stream=True).stream.remote(unslotted_request()))  # joins, then its LLM call fails
    rest = list(running)
    assert _decoder().stats.remote().result()["joined"] == joined + 1
    assert len(broken) == 1 and "the LLM stream failed" in (broken[0].error or "") and broken[0].server_fault
    assert first.error is None and all(c.error is None for c in rest) and rest[-1].finish_reason is not None


def test_a_caller_leaving_stops_its_llm_row_while_its_call_serves_others(server):
    """Two replies queued together share one LLM call; the one whose caller leaves has its LLM row
    stopped (``LLM.drop`` reaches the replica running the call, one of two), and the other runs to its end."""
    from freezeempath.chat_template import Turn
    from freezeempath.inference.llm_session import GenerationRequest

    def story(seed: int) -> GenerationRequest:
        return GenerationRequest(
            turns=(Turn("user", "tell me a story"),), max_new_tokens=240, temperature=1.0, seed=seed
        )

    shared = 0  # calls both replies shared; each ran on either LLM replica
    for _ in range(6):  # the second must arrive within the batch's 5 ms wait to share the first's call
        before = _decoder().stats.remote().result()
        leaving = _decoder().options(stream=True).stream.remote(story(1))
        staying = _decoder().options(stream=True).stream.remote(story(2))
        assert next(iter(leaving)).error is None
        leaving.cancel()
        rest = list(staying)
        after = _decoder().stats.remote().result()
        assert all(c.error is None for c in rest) and rest[-1].finish_reason is not None
        if after["joined"] == before["joined"]:  # both opened the batch: one LLM call
            assert after["llm_rows_dropped"] == before["llm_rows_dropped"] + 1
            shared += 1
        if shared == 2:
            break
    assert shared == 2


def _thread_nice(deployment: str) -> dict[int, set[int]]:
    """Nice values of each thread, by process, of this app's ``deployment`` replicas (Ray's process titles)."""
    found = {}
    for proc in (p for p in Path("/proc").iterdir() if p.name.isdigit()):
        try:
            if f"ServeReplica:freezeempath:{deployment}" in (proc / "cmdline").read_text():
                stats = [(t / "stat").read_text() for t in (proc / "task").iterdir()]
                found[int(proc.name)] = {int(x.rsplit(")", 1)[1].split()[16]) for x in stats}
        except OSError:  # the process or thread has ended
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread priorities from Linux /proc")
def test_llm_replicas_run_every_thread_at_their_cpu_priority(server, client):
    """local.yaml's ``llm.cpu_priority`` reaches every thread of both LLM replicas, those started while
    serving too; the stages the LLM runs ahead of keep Ray's own priorities."""
    assert tiny_args().deployments.llm.cpu_priority == 19
    assert client.chat.completions.create(model="freezeempath", messages=[spoken()], **AUDIO).choices
    llm, vocoder = _thread_nice("LLM"), _thread_nice("Vocoder")
    assert len(llm) == 2 and all(values == {19} for values in llm.values())
    assert len(vocoder) == 1 and 19 not in next(iter(vocoder.values()))


def test_calls_between_replicas_carry_messages_past_grpcs_default_limit(server):
    """Low-latency calls go over each replica's gRPC server, whose default limit is 4 MiB; a request's
    clip features at a 7B LLM's width pass that when several replies join one LLM call."""
    import torch
    from ray import serve

    from serve.args import ServeArgs

    @serve.deployment(ray_actor_options={"num_cpus": 0, "runtime_env": {"env_vars": ServeArgs().replica_env()}})
    class Sizes:
        def numel(self, features: torch.Tensor) -> int:
            return features.numel()

    features = torch.randn(16, 60, 3584)  # 16 clips of 60 positions each: 13.8 MB
    handle = serve.run(Sizes.bind(), name="sizes", route_prefix=None).options(_by_reference=False)
    try:
        assert handle.numel.remote(features).result(timeout_s=60) == features.numel()
    finally:
        serve.delete("sizes")


def test_client_timing_out_on_a_whole_reply_leaves_nothing_running(server, client):
    impatient = client.with_options(timeout=0.05)  # hangs up long before a reply could be ready (≈ 0.3 s)
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model="freezeempath", messages=[spoken()], **AUDIO)
    stats, health = _wait_until_idle(server)
    assert (stats["sessions"], stats["waiting"]) == (0, 0) and health == {"status": "ok", "active_requests": 0}
    assert client.chat.completions.create(model="freezeempath", messages=[spoken()], **AUDIO).choices


def test_the_other_reply_of_a_shared_session_survives_a_caller_leaving(client):
    with ThreadPoolExecutor(2) as pool:  # queued together, the two replies share one decoder session
        leaving = pool.submit(_hang_up_after_first_audio, client)
        staying = pool.submit(lambda: list(_pcm16_stream(client, stream_options={"include_usage": True})))
        leaving.result()
        chunks = staying.result()
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert chunks[-1].usage.total_tokens > 0


def test_stream_ends_with_done(server):
    body = {"model": "freezeempath", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", f"{server}/v1/chat/completions", json=body, timeout=60) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]" and json.loads(lines[-2][6:])["choices"][0]["finish_reason"]


def test_multi_turn_with_audio_id_and_text_only_reply(client):
    earlier = wav_b64(seed=1)
    first = client.chat.completions.create(model="freezeempath", messages=[spoken(earlier)], **AUDIO)
    history = [spoken(earlier), {"role": "assistant", "audio": {"id": first.choices[0].message.audio.id}}]
    second = client.chat.completions.create(model="freezeempath", messages=[*history, spoken(wav_b64(seed=2))], **AUDIO)
    assert second.choices[0].message.audio.data and second.usage.prompt_tokens > first.usage.prompt_tokens
    text = client.chat.completions.create(model="freezeempath", messages=[*history, {"role": "user", "content": "ok"}])
    assert isinstance(text.choices[0].message.content, str) and text.choices[0].message.audio is None
    assert text.x_emotion is None  # the last user turn was typed
    fallback = [spoken(), {"role": "assistant", "audio": {"id": "audio_expired"}, "content": "I hear you."}, spoken()]
    assert client.chat.completions.create(model="freezeempath", messages=fallback, **AUDIO).choices


def test_emotion_endpoint(server):
    body = {"input_audio": {"data": wav_b64(seed=3), "format": "wav"}}
    response = httpx.post(f"{server}/v1/audio/emotion", json=body, timeout=60)
    assert response.status_code == 200
    result = response.json()
    assert result["label"] in LABEL_WORDS and set(result["scores"]) == set(LABEL_WORDS)


def _silent_wav(seconds: float) -> str:
    buffer = io.BytesIO()
    sf.write(buffer, [0.0] * int(16_000 * seconds), 16_000, format="WAV")
    return base64.b64encode(buffer.getvalue()).decode()


BAD = [
    ({"messages": [spoken(base64.b64encode(b"hello, not audio" * 8).decode())]}, "could not be decoded"),
    ({"messages": [spoken("!!not base64!!")]}, "not valid base64"),
    ({"messages": [spoken(fmt="aac")]}, "unsupported input audio format"),
    ({"messages": [spoken(wav_b64(fmt="FLAC"))]}, "declared as wav but the data is flac"),
    ({"messages": [spoken(_silent_wav(9.0))]}, "maximum is 8 s"),
    ({"messages": [spoken(_silent_wav(0.0))]}, "audio is empty"),
    ({"messages": [spoken("")]}, "audio is empty"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "unsupported content"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, "last message"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "unsupported role"),
    ({"messages": [{"role": "user", "content": ""}]}, "empty"),
    ({"audio": {"voice": "robot", "format": "wav"}}, "unknown voice"),
    ({"audio": {"voice": "alloy", "format": "aac"}}, "unsupported audio format"),
    ({"stream": True}, "must use format pcm16"),
    ({"audio": None}, "audio (voice and format) is required"),
    ({"max_completion_tokens": 500}, "exceeds the limit"),
    ({"messages": [{"role": "user", "content": "x" * 3000}]}, "prompt is 3"),  # byte-level: 1 token per byte
    ({"n": 2}, "n:"),
    ({"temperature": 9}, "temperature"),
]


@pytest.mark.parametrize(("patch", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_input_is_a_400_naming_the_problem(client, patch, message):
    body = {"model": "freezeempath", "messages": [spoken()], **AUDIO, **patch}
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(openai.BadRequestError) as err:
        client.post("/chat/completions", body=body, cast_to=object, stream="stream" in body)
    assert err.value.status_code == 400 and message in err.value.body["message"]
    assert set(err.value.body) == {"message", "type", "param", "code"}


def test_limits_body_size_and_concurrency(server, client):
    big = httpx.post(f"{server}/v1/chat/completions", content=b"x" * (MAX_BODY + 1), timeout=60)
    assert big.status_code == 413 and "exceeds the limit" in big.json()["error"]["message"]

    def call(_: int) -> int:
        try:
            client.chat.completions.create(model="freezeempath", messages=[spoken()], **AUDIO)
            return 200
        except openai.RateLimitError as err:
            assert err.response.headers["retry-after"] == "1" and err.body["type"] == "rate_limit_error"
            return 429

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(call, range(8)))
    assert 429 in codes and 200 in codes


def test_server_keeps_serving_with_no_leaked_slots(server, client):
    assert client.chat.completions.create(model="freezeempath", messages=[spoken()], **AUDIO).choices
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok", "active_requests": 0}


def test_the_rubric_judge_grades_through_an_openai_compatible_endpoint(server):
    from freezeempath.evaluation.judge import Judge, parse_scores
    from freezeempath.evaluation.suite import JudgeConfig

    judge = Judge(JudgeConfig(url=f"{server}/v1", model="freezeempath", max_new_tokens=8))
    score = judge.score("I lost my job.", "sad", "I'm so sorry to hear that.")
    assert isinstance(score.raw, str) and score == parse_scores(score.raw)  # the tiny app's words, parsed


def test_an_unknown_model_is_a_404_model_not_found_and_a_vanishing_temperature_is_served(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-nothing", messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["code"] == "model_not_found" and err.value.body["param"] == "model"
    reply = client.chat.completions.create(
        model="freezeempath", messages=[{"role": "user", "content": "hi"}], temperature=1e-38, max_completion_tokens=4
    )
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_a_seeded_fuzz_slice_gets_no_5xx_and_never_hangs(server):
    from jobs.bench.fuzz_inputs import fuzz

    report = fuzz(server, examples=150, seed=1, seconds=240, timeout_s=60)
    assert report.inputs == 150 and sum(report.by_status.values()) == 150
    assert report.server_errors == 0 and report.hangs == 0, report.summary()["examples_5xx"]
    assert report.by_status[400] > 50 and report.healthz_ms  # mostly hostile input, all answered
