"""What ``lit_align.redaction`` masks, as classes: every query value of every URL (any name, first or
later position), the fragment, userinfo; every provider prefix it knows; any ``api_key_env`` value
that is not a plausible variable name; the run's own credentials echoed back by a judge endpoint.

Planted keys are assembled at run time, so that secret scanners do not flag this file.
"""

from __future__ import annotations

import base64
import json
import random
import re
import string

import pytest

from lit_align.redaction import (MASK, PROVIDER_PREFIXES, credentials, is_env_var_name, mask_values, redact, redact_text,
                                 redact_url)

KEY = "Zq" + "8RvT3mWx1LpK4sNd"  # a value that no name-based rule could recognise

# names a real service puts its credential under, and ordinary names (every value is masked, whatever the name)
QUERY_NAMES = ("api_key", "apikey", "api-key", "key", "sig", "code", "auth", "token", "access_token", "signature",
               "subscription-key", "Ocp-Apim-Subscription-Key", "password", "secret", "client_secret", "x", "se", "sv")


@pytest.mark.parametrize("name", QUERY_NAMES)
@pytest.mark.parametrize("position", ["first", "later", "last-before-fragment"])
def test_every_query_value_is_masked_in_any_position(name, position):
    query = {"first": f"{name}={KEY}&a=1", "later": f"a=1&b=2&{name}={KEY}", "last-before-fragment": f"a=1;{name}={KEY}"}[position]
    url = f"https://host.example:8443/v1/deploy?{query}" + ("#frag" if position == "last-before-fragment" else "")
    for text in (url, f"error: cannot reach {url} (timeout)", json.dumps({"base_url": url}), f"base_url: '{url}'"):
        masked = redact_text(text)
        assert KEY not in masked, masked
        assert f"{name}={MASK}" in masked and "https://host.example:8443/v1/deploy?" in masked  # name, host, path kept
    assert redact_url(url).count(MASK) == query.count("=") + ("#" in url)  # every value, and the fragment


@pytest.mark.parametrize("fragment", [f"access_token={KEY}", KEY, f"a=1&id_token={KEY}"])
def test_fragment_is_masked(fragment):
    assert redact_text(f"see http://h/cb#{fragment} now") == f"see http://h/cb#{MASK} now"


@pytest.mark.parametrize("userinfo", [f"user:{KEY}", KEY, f"{KEY}:x-oauth-basic"])
def test_userinfo_is_masked(userinfo):
    assert redact_text(f"postgres://{userinfo}@db:5432/x?sslmode=require") == f"postgres://{MASK}@db:5432/x?sslmode={MASK}"


def test_a_bare_query_value_and_an_empty_one():
    assert redact_url(f"https://h/p?{KEY}") == f"https://h/p?{MASK}"  # a key given without a name
    assert redact_url("https://h/p?flag=&x=1") == f"https://h/p?flag=&x={MASK}"  # nothing to hide: left as is
    assert redact_text("https://api.openai.com/v1 runs/demo/hf") == "https://api.openai.com/v1 runs/demo/hf"


@pytest.mark.parametrize("name", ["api_key", "token", "sig", "auth", "code", "key", "access_token", "signature"])
@pytest.mark.parametrize("first", [True, False])
def test_a_query_string_outside_a_url_masks_secret_names(name, first):
    text = f"/v1/chat?{name}={KEY}&n=1" if first else f"/v1/chat?n=1&{name}={KEY}"
    assert KEY not in redact_text(text)


def _sample(pattern: str, seed: int) -> str:
    """A string matching one of PROVIDER_PREFIXES' patterns: its literal prefix, then random allowed characters."""
    rng = random.Random(seed)
    alternatives = {"[pousr]": "p", "(?:live|test)": "live", "[abposr]": "b"}
    prefix, rest = re.match(r"^(.*?)(\[[^\]]+\]\{\d+,?\})$", pattern).groups()
    for group, pick in alternatives.items():
        prefix = prefix.replace(group, pick)
    chars, count, open_ended = re.match(r"\[([^\]]+)\]\{(\d+)(,?)", rest).groups()
    alphabet = {"A-Za-z0-9_\\-": string.ascii_letters + string.digits, "A-Za-z0-9": string.ascii_letters + string.digits,
                "A-Za-z0-9\\-": string.ascii_letters + string.digits, "A-Z0-9": string.ascii_uppercase + string.digits,
                "A-Za-z0-9_": string.ascii_letters + string.digits}[chars]
    return prefix + "".join(rng.choice(alphabet) for _ in range(int(count) + (4 if open_ended else 0)))


@pytest.mark.parametrize("provider", sorted(PROVIDER_PREFIXES))
def test_every_provider_prefix_is_masked_bare_and_in_context(provider):
    token = _sample(PROVIDER_PREFIXES[provider], seed=len(provider))
    assert re.fullmatch(PROVIDER_PREFIXES[provider], token), token  # the planted key is one of that provider's
    for text in (token, f"failed with {token}.", f"{{'detail': '{token}'}}", f"Bearer {token}"):
        assert token not in redact_text(text) and MASK in redact_text(text), (provider, text)
    assert not is_env_var_name(token)  # typed into api_key_env: refused, not taken for a name
    assert redact({"note": f"key {token}"}) == {"note": f"key {MASK}"}


PLAUSIBLE = ("OPENAI_API_KEY", "FAKE_JUDGE_KEY", "my_judge_key_2", "AZURE_OPENAI_API_KEY", "GPT4_JUDGE_KEY", "S3_TOKEN",
             "HF_TOKEN", "SHA256_SECRET", "JUDGE_KEY_2024", "MY_KEY_20240101", "AZURE_OPENAI_KEY_EASTUS2")
NOT_NAMES = ("ABCD1234EFGH5678IJKL", "A1B2C3D4E5F6", "3F9A8B7C6D5E4F3A2B1C0D9E", "not a name", "key=1", "8RVT3MWX1LPK4SND",
             "Zq8RvT3mWx1LpK4sNd77", "", "X" * 65, "OPENAI_" + "AB12CD34EF")


@pytest.mark.parametrize("value", PLAUSIBLE)
def test_plausible_variable_names_are_kept(value):
    assert is_env_var_name(value)
    assert redact({"api_key_env": value}) == {"api_key_env": value}
    assert redact_text(f"api_key_env: {value}") == f"api_key_env: {value}"


@pytest.mark.parametrize("value", NOT_NAMES)
def test_anything_else_in_api_key_env_is_a_key(value):
    assert not is_env_var_name(value)
    assert redact({"judge": {"api_key_env": value}}) == {"judge": {"api_key_env": None}}
    if value and " " not in value:
        assert value not in redact_text(f"{{'api_key_env': '{value}'}}")


@pytest.mark.parametrize("value", [v for v in NOT_NAMES if v])
def test_judge_client_refuses_it_in_one_line_without_echoing_it(value):
    from evals.judge import JudgeClient

    with pytest.raises(ValueError) as err:
        JudgeClient(model="m", api_key_env=value)
    message = str(err.value)
    assert "api_key_env must be the NAME" in message and value not in message and "\n" not in message


def test_credentials_are_the_env_values_and_the_urls_userinfo_and_query_values(monkeypatch):
    monkeypatch.setenv("LIT_ALIGN_TEST_KEY", KEY)
    userinfo = "judge:" + KEY[::-1]
    found = credentials(["LIT_ALIGN_TEST_KEY", "UNSET_VARIABLE_X"], [f"http://{userinfo}@h/v1?subscription-key=QUERY{KEY}", None])
    assert set(found) == {KEY, userinfo, KEY[::-1], base64.b64encode(userinfo.encode()).decode(), "QUERY" + KEY}
    assert found == sorted(found, key=len, reverse=True)
    assert credentials(["X"], ["http://u:pw@h"]) == ["dTpwdw=="]  # too short to mask as free text (kept out)... but base64 of 4
    assert mask_values({"a": [f"echo {KEY}!", 3], "b": None}, [KEY]) == {"a": [f"echo {MASK}!", 3], "b": None}


def test_a_judge_that_echoes_the_credentials_gets_them_masked_before_anything_is_written(tmp_path, monkeypatch):
    from evals.judge import JudgeClient, JudgeRequest
    from tests.evals_support.fake_openai import FakeOpenAIServer

    env_key = "Env" + KEY
    monkeypatch.setenv("LIT_ALIGN_ECHO_KEY", env_key)
    user_key = "User" + KEY
    with FakeOpenAIServer() as server:
        def echo(body, n):  # the endpoint quotes the request's headers and URL back in its reply
            return ("content", f"[[8]] headers: {sorted(server.authorization)} url: {url}")

        server.fault = echo
        url = server.base_url.replace("http://", f"http://judge:{user_key}@")
        sent = set()
        for address in (url, server.base_url):  # basic auth from the userinfo; the env key as bearer token
            server.authorization.clear()  # (the echo quotes this request's header)
            judge = JudgeClient(model="j", base_url=address, api_key_env="LIT_ALIGN_ECHO_KEY", max_retries=0)
            responses, _ = judge.judge([JudgeRequest.chat(None, f"rate {'@' in address}")], tmp_path / "judge_cache.jsonl")
            assert responses[0].error is None and responses[0].content.startswith("[[8]] headers:")
            secrets = (env_key, user_key, base64.b64encode(f"judge:{user_key}".encode()).decode())
            assert not [s for s in secrets if s in responses[0].content], responses[0].content
            sent |= server.authorization
        assert f"Bearer {env_key}" in sent and secrets[-1] in " ".join(sent)  # both did reach the endpoint
    cache = (tmp_path / "judge_cache.jsonl").read_text()
    assert cache.count("[[8]] headers:") == 2 and not [s for s in secrets if s in cache]


def test_an_error_line_quoting_a_url_is_masked(monkeypatch, capsys):
    import cli

    def library(args):  # a library's ValueError that quotes the URL it was given
        raise ValueError(f"cannot reach https://h.example/v1?x=1&sig={KEY}#frag")

    monkeypatch.setattr(cli, "main", library)
    assert cli.run(["fit"]) == 1
    err = capsys.readouterr().err
    assert KEY not in err and f"sig={MASK}" in err and "#frag" not in err
