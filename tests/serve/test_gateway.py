"""The gateway's request checks without Ray: API keys (from args and the environment) and body parsing."""

from __future__ import annotations

import pytest

from serve.api import ApiError, ChatCompletionRequest
from serve.args import ServeArgs
from serve.gateway import check_api_key, parse


def test_api_keys_from_args_and_environment(monkeypatch):
    monkeypatch.setenv("FREEZEEMPATH_API_KEYS", "env-1, env-2,")
    keys = ServeArgs(api_keys=["cfg"]).keys()
    assert keys == {"cfg", "env-1", "env-2"}
    check_api_key("Bearer env-2", keys)
    check_api_key(None, frozenset())  # no keys configured: open
    for header in (None, "Bearer nope", "env-1", "Basic env-1"):
        with pytest.raises(ApiError) as err:
            check_api_key(header, keys)
        assert err.value.status == 401 and err.value.code == "invalid_api_key"


def test_a_body_that_does_not_validate_is_a_400_naming_its_field():
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 2}'
    with pytest.raises(ApiError) as err:
        parse(ChatCompletionRequest, body)
    assert err.value.status == 400 and err.value.param == "n" and err.value.message.startswith("n: ")
    with pytest.raises(ApiError, match="messages") as err:
        parse(ChatCompletionRequest, b'{"model": "m", "messages": []}')
    assert err.value.param == "messages"
