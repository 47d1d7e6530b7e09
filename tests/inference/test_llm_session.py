"""The LLM session: streams sampled per stream, joining and leaving between steps; bad requests fail alone."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
from freezeempath.inference.llm_session import LLMSession
from helpers import text_request, unslotted_request


def _run(session: LLMSession) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in session.streams]
    while (groups := session.step()) is not None:
        for b, group in enumerate(groups):
            if group is not None:
                assert len(group.token_ids) <= 3 and group.hidden.shape == (len(group.token_ids), 32)
                out[b] += group.token_ids
    return out


def test_llm_session_sampling_is_per_stream_and_bad_requests_fail_alone(tiny_parts):
    _, model = tiny_parts
    llm, stop = model.llm, model.stop_ids
    alone = _run(LLMSession(llm, stop, [text_request("hello", 7, seed=3)], read=3))
    long_prompt = text_request("x" * 3000, 7)  # byte-level tokenizer: > 2048 positions
    session = LLMSession(
        llm, stop, [text_request("another one", 5), long_prompt, text_request("hello", 7, seed=3)], read=3
    )
    first = session.step()
    assert first is not None and first[1] is not None and "exceed" in (first[1].error or "")
    assert not first[1].server_fault  # the request's fault: the gateway answers 400
    together = _run(session)
    assert together[2] == alone[0] and together[1] == []


def test_llm_session_streams_join_and_leave_between_steps(tiny_parts):
    _, model = tiny_parts
    llm, stop = model.llm, model.stop_ids
    requests = [
        text_request("another one", 4, seed=1),
        text_request("hello there, how are you", 9, seed=2),
        text_request("hi", 6),
    ]
    alone = [_run(LLMSession(llm, stop, [r], read=3))[0] for r in requests]
    session, out = LLMSession(llm, stop, requests[:1], read=3), [[], [], []]
    owners = [0]  # session stream → request
    for step in range(40):
        if step in (1, 3):  # the second request joins a running session, the third one after a compact
            owners.append(1 if step == 1 else 2)
            session.add([requests[owners[-1]]])
        groups = session.step()
        if groups is None:
            break
        for b, group in enumerate(groups):
            if group is not None:
                out[owners[b]] += group.token_ids
        owners = [owners[b] for b in session.compact()]
    assert out == alone and owners == [] and session.cache is None
    dropped = LLMSession(llm, stop, requests[1:], read=3)
    first = dropped.step()
    assert first is not None and first[1] is not None
    assert dropped.compact(drop={0}) == [1] and dropped.mask.shape[0] == 1
    assert [*first[1].token_ids, *_run(dropped)[0]] == alone[2]


def test_llm_session_a_request_that_cannot_join_leaves_the_running_streams_as_they_were(tiny_parts):
    _, model = tiny_parts
    llm, stop = model.llm, model.stop_ids
    request = text_request("hello there, how are you", 9, seed=2)

    def groups(session: LLMSession) -> list:
        out = []
        while (step := session.step()) is not None:
            out += [g for g in step if g is not None]
        return out

    alone = groups(LLMSession(llm, stop, [request], read=3))
    session = LLMSession(llm, stop, [request], read=3)
    first = session.step()
    with pytest.raises(ValueError, match="placeholder"):
        session.add([unslotted_request()])
    assert len(session.streams) == 1 and session.mask.shape[0] == 1
    assert first is not None and first[0] is not None
    got = [first[0], *groups(session)]
    assert [g.token_ids for g in got] == [g.token_ids for g in alone]
    for mine, theirs in zip(got, alone, strict=True):  # the same context: no position fed twice
        torch.testing.assert_close(mine.hidden, theirs.hidden)


def test_a_prompt_over_its_limit_fails_alone_before_any_prefill(tiny_parts):
    _, model = tiny_parts
    llm, stop = model.llm, model.stop_ids
    capped = dataclasses.replace(text_request("x" * 40, 5), max_prompt_tokens=32)
    session = LLMSession(llm, stop, [text_request("hello", 5, seed=3), capped], read=3)
    first = session.step()
    assert first is not None and first[1] is not None and first[0] is None
    assert re.fullmatch(r"prompt is \d+ positions \(tokens and speech rows\); the limit is 32", first[1].error or "")
    assert _run(session)[0] == _run(LLMSession(llm, stop, [text_request("hello", 5, seed=3)], read=3))[0]
