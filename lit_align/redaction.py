"""Keep credentials out of everything lit-align writes or prints.

Config is meant to hold the NAME of an environment variable (``api_key_env``), never a key. Keys
still end up in text in four ways, and each is removed here before a file or message is written:

- inside a URL: its userinfo (``http://user:KEY@host``), EVERY query value whatever its name
  (``?subscription-key=KEY``, ``&sig=KEY``) and its fragment (``#access_token=KEY``) are masked;
  a query string met outside a URL is masked under secret-looking names (``&token=KEY``);
- under a secret-looking name (``api_key: sk-...``, ``'hf_token': 'hf_...'``), or typed into a
  ``*_env`` field in place of a variable name (``api_key_env: <a key>``);
- as a bare token with a well-known provider prefix (``PROVIDER_PREFIXES``: ``sk-...``, ``hf_...``);
- as the run's own credentials echoed back by an endpoint (``mask_values`` with ``credentials``:
  the values of its ``api_key_env`` variables and its URLs' userinfo and query values).

Used by the CLI (config.yaml, hparams.yaml, checkpoints' hyper-parameters, argument errors) and by
the evaluation suite (results.json, judge replies, caches and errors). It lives in the library core
because both the checkpoint IO and ``evals`` need it; it imports nothing heavy (``lit_align/__init__``
is cheap too), so ``evals`` importing it stays free of Lightning.
"""

from __future__ import annotations

import base64
import os
import re
from typing import Any, Iterable

MASK = "***"

SECRET_NAME = re.compile(r"(api[_-]?key|secret|password|passwd|token|credentials?)$", re.IGNORECASE)
"""Mapping keys whose string values are secrets (``api_key_env`` is not one: it holds a name)."""

PROVIDER_PREFIXES = {
    "openai": r"sk-[A-Za-z0-9_\-]{16,}",
    "stripe": r"sk_(?:live|test)_[A-Za-z0-9]{16,}",
    "huggingface": r"hf_[A-Za-z0-9]{30,}",
    "github": r"gh[pousr]_[A-Za-z0-9]{30,}",
    "github_fine_grained": r"github_pat_[A-Za-z0-9_]{30,}",
    "slack": r"xox[abposr]-[A-Za-z0-9\-]{10,}",
    "gitlab": r"glpat-[A-Za-z0-9_\-]{20,}",
    "aws_access_key": r"AKIA[A-Z0-9]{16}",
    "google": r"AIza[A-Za-z0-9_\-]{35}",
}
"""Bare keys recognised by their provider's prefix, wherever they appear (tests plant one of each)."""

_PREFIXED = re.compile(r"\b(?:" + "|".join(PROVIDER_PREFIXES.values()) + ")")
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s'\"<>`]+")
_USERINFO = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<userinfo>[^/?#@]+)@")
_QUERY = re.compile(  # a query string in text that is not a full URL (a path, a log line): secret-looking names only
    r"(?P<name>[?&;](?:[\w\-]*(?:api[_-]?key|token|secret|password|signature)|key|sig|auth|code)=)(?P<value>[^&;#\s'\"]+)",
    re.IGNORECASE,
)
_NAMED = re.compile(
    r"(?P<name>['\"]?\b[\w\-]*(?:api[_-]?key|secret|password|passwd|token)['\"]?\s*[:=]\s*['\"]?)(?P<value>[^'\"\s,}\]&;#]+)",
    re.IGNORECASE,
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_FIELD = re.compile(r"(?P<name>['\"]?\b[\w\-]*_env['\"]?\s*[:=]\s*['\"]?)(?P<value>[^'\"\s,}\]]+)", re.IGNORECASE)

MIN_CREDENTIAL_LENGTH = 6
"""Shorter values of the run's credentials are not masked in free text (a 2-letter user name would
mask every word holding it, judge verdicts included); real keys are far longer."""


def _mask_query(query: str) -> str:
    """Every value of a query string masked (``a=1&b=2`` -> ``a=***&b=***``; a bare ``KEY`` -> ``***``)."""
    parts = re.split(r"([&;])", query)
    out = []
    for part in parts:
        if part in ("&", ";") or part == "":
            out.append(part)
        elif "=" in part:
            name, value = part.split("=", 1)
            out.append(f"{name}={MASK}" if value else part)
        else:
            out.append(MASK)
    return "".join(out)


def redact_url(url: str) -> str:
    """``url`` with its userinfo, every query value and its fragment masked (scheme, host and path kept)."""
    url = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", url)
    url, hash_, fragment = url.partition("#")
    base, question, query = url.partition("?")
    out = base + (question + _mask_query(query) if question else "")
    return out + (hash_ + MASK if fragment else hash_)


def redact_text(text: str) -> str:
    """``text`` with credentials in URLs, under secret names, in ``*_env`` fields and with provider prefixes masked."""
    text = _URL.sub(lambda m: redact_url(m[0]), text)
    text = _QUERY.sub(lambda m: f"{m['name']}{MASK}", text)
    text = _NAMED.sub(lambda m: m["name"] + MASK, text)  # "api_key_env: NAME" does not match: the name must end there
    # ...but a key typed into api_key_env (or any *_env field) in place of a variable name is masked
    text = _ENV_FIELD.sub(lambda m: m[0] if is_env_var_name(m["value"]) else m["name"] + MASK, text)
    return _PREFIXED.sub(MASK, text)


def redact(node: Any, by_name: bool = True) -> Any:
    """A copy of a config-like tree (dicts, lists, strings) with secrets removed.

    With ``by_name``, strings under secret-looking keys (``api_key``, ``hf_token``) become ``None``
    (the key itself is not kept even masked), and so does a ``*_env`` value that is not a variable
    name; every other string goes through ``redact_text``.
    """
    if isinstance(node, dict):
        return {k: (None if by_name and isinstance(k, str) and isinstance(v, str) and _secret_field(k, v)
                    else redact(v, by_name)) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(redact(v, by_name) for v in node)
    if isinstance(node, str):
        return redact_text(node)
    return node


def _secret_field(key: str, value: str) -> bool:
    return bool(SECRET_NAME.search(key)) or (key.lower().endswith("_env") and not is_env_var_name(value))


def looks_like_secret(value: str) -> bool:
    """Whether ``value`` reads like a key rather than a name: a provider prefix, a long token mixing
    lower case, upper case and digits, or a word with digits scattered through it (``AB12CD34EF56``:
    environment variable names are words, with at most a number here and there)."""
    if _PREFIXED.search(value) or redact_text(value) != value:
        return True
    long_token = len(value) >= 20 and "_" not in value and not value.isupper()
    if long_token and sum(c.isdigit() for c in value) >= 2 and any(c.islower() for c in value):
        return True
    return len(value) > 64 or any(_key_like_segment(s) for s in value.split("_"))


def _key_like_segment(segment: str) -> bool:
    """A piece of a name between underscores that reads like random characters: long, or digits mixed in
    (``GPT4`` and ``S3`` are words; ``A1B2C3D4`` and 30 hexadecimal digits are not)."""
    if len(segment) > 32:
        return True
    digit_runs = len(re.findall(r"\d+", segment))
    mixed = any(c.isalpha() for c in segment)  # (a date, 20240101, is a plausible part of a name)
    return len(segment) >= 8 and mixed and (digit_runs >= 2 or sum(c.isdigit() for c in segment) >= 4)


def is_env_var_name(value: str) -> bool:
    """A plausible environment variable name (``OPENAI_API_KEY``), and not a key typed in its place."""
    return bool(_ENV_NAME.match(value)) and not looks_like_secret(value)


def credentials(env_names: Iterable[str] = (), urls: Iterable[str | None] = ()) -> list[str]:
    """The run's own secrets, to mask wherever they come back: the values of the environment variables
    named (``api_key_env``), and each URL's userinfo (also as the Basic-auth header carries it: base64)
    and query values. Longest first, so a key is masked whole before any part of it."""
    found: set[str] = set()
    for name in env_names:
        value = os.environ.get(name) if name and is_env_var_name(name) else None
        if value:
            found.add(value.strip())
    for url in urls:
        match = _USERINFO.match(url or "")
        if match:
            userinfo = match["userinfo"]
            found.update({userinfo, *userinfo.split(":", 1)[1:], base64.b64encode(userinfo.encode()).decode()})
        query = (url or "").partition("#")[0].partition("?")[2]
        found.update(part.split("=", 1)[-1] for part in re.split(r"[&;]", query) if part)
    return sorted((s for s in found if len(s) >= MIN_CREDENTIAL_LENGTH), key=len, reverse=True)


def mask_values(node: Any, secrets: Iterable[str]) -> Any:
    """A copy of ``node`` (dicts, lists, strings) with every occurrence of each of ``secrets`` masked,
    then ``redact_text`` over every string."""
    secrets = [s for s in secrets if s]
    if isinstance(node, dict):
        return {k: mask_values(v, secrets) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(mask_values(v, secrets) for v in node)
    if isinstance(node, str):
        for secret in secrets:
            node = node.replace(secret, MASK)
        return redact_text(node)
    return node
