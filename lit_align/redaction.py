"""Keep credentials out of everything lit-align writes or prints.

Config is meant to hold the NAME of an environment variable (``api_key_env``), never a key. Keys
still end up in text in three ways, and each is removed here before a file or message is written:

- inside a URL: ``http://user:KEY@host`` (userinfo) or ``?api_key=KEY`` / ``&token=KEY`` (query);
- under a secret-looking name (``api_key: sk-...``, ``'hf_token': 'hf_...'``);
- as a bare token with a well-known provider prefix (``sk-...``, ``hf_...``, ``ghp_...``).

Used by the CLI (config.yaml, hparams.yaml, checkpoints' hyper-parameters, argument errors) and by
the evaluation suite (results.json, judge errors). It lives in the library core because both the
checkpoint IO and ``evals`` need it; it imports nothing heavy (``lit_align/__init__`` is cheap too),
so ``evals`` importing it stays free of Lightning.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"

SECRET_NAME = re.compile(r"(api[_-]?key|secret|password|passwd|token|credentials?)$", re.IGNORECASE)
"""Mapping keys whose string values are secrets (``api_key_env`` is not one: it holds a name)."""

_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<userinfo>[^/\s@'\"?#]+)@")
_QUERY = re.compile(
    r"(?P<name>[?&;](?:[\w\-]*(?:api[_-]?key|token|secret|password|signature)|key|sig|auth|code)=)(?P<value>[^&;#\s'\"]+)",
    re.IGNORECASE,
)
_NAMED = re.compile(
    r"(?P<name>['\"]?\b[\w\-]*(?:api[_-]?key|secret|password|passwd|token)['\"]?\s*[:=]\s*['\"]?)(?P<value>[^'\"\s,}\]&;#]+)",
    re.IGNORECASE,
)
_PREFIXED = re.compile(
    r"\b(?:sk-[A-Za-z0-9_\-]{16,}|sk_(?:live|test)_[A-Za-z0-9]{16,}|hf_[A-Za-z0-9]{30,}|gh[pousr]_[A-Za-z0-9]{30,}"
    r"|github_pat_[A-Za-z0-9_]{30,}|xox[abposr]-[A-Za-z0-9\-]{10,}|glpat-[A-Za-z0-9_\-]{20,}|AKIA[A-Z0-9]{16}|AIza[A-Za-z0-9_\-]{35})"
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_FIELD = re.compile(r"(?P<name>['\"]?\b[\w\-]*_env['\"]?\s*[:=]\s*['\"]?)(?P<value>[^'\"\s,}\]]+)", re.IGNORECASE)


def redact_text(text: str) -> str:
    """``text`` with credentials in URLs, under secret names and with provider prefixes masked."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = _QUERY.sub(lambda m: f"{m['name']}{MASK}", text)
    text = _NAMED.sub(lambda m: m["name"] + MASK, text)  # "api_key_env: NAME" does not match: the name must end there
    # ...but a key typed into api_key_env (or any *_env field) in place of a variable name is masked
    text = _ENV_FIELD.sub(lambda m: m[0] if is_env_var_name(m["value"]) else m["name"] + MASK, text)
    return _PREFIXED.sub(MASK, text)


def redact(node: Any, by_name: bool = True) -> Any:
    """A copy of a config-like tree (dicts, lists, strings) with secrets removed.

    With ``by_name``, strings under secret-looking keys (``api_key``, ``hf_token``) become ``None``
    (the key itself is not kept even masked); every other string goes through ``redact_text``.
    """
    if isinstance(node, dict):
        return {k: (None if by_name and isinstance(k, str) and SECRET_NAME.search(k) and isinstance(v, str)
                    else redact(v, by_name)) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(redact(v, by_name) for v in node)
    if isinstance(node, str):
        return redact_text(node)
    return node


def looks_like_secret(value: str) -> bool:
    """Whether ``value`` reads like a key rather than a name: a provider prefix, or a long token
    mixing lower case, upper case and digits (environment variable names are upper case words)."""
    if _PREFIXED.search(value) or redact_text(value) != value:
        return True
    long_token = len(value) >= 20 and "_" not in value and not value.isupper()
    return long_token and sum(c.isdigit() for c in value) >= 2 and any(c.islower() for c in value)


def is_env_var_name(value: str) -> bool:
    """A plausible environment variable name (``OPENAI_API_KEY``), and not a key typed in its place."""
    return bool(_ENV_NAME.match(value)) and not looks_like_secret(value)
