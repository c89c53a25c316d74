"""Keep credentials out of files and consoles.

A model argument is a secret when its name is ``api_key``, ``auth_token`` or contains
``key``, ``token``, ``secret`` or ``password`` (``max_tokens``-style counts excepted); a
URL carries secrets in its user-info (``https://user:pass@host``) and in query parameters
with such names. Everything written or logged passes through :func:`redact_text`,
:func:`redact_url` or :func:`redact_args`, which replace each secret value with
:data:`REDACTED`. Keys belong in the environment (``OPENAI_API_KEY``); see the README.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "***"
_SECRET_NAME = re.compile(r"(?:^|_|-)(?:api_?key|key|token|secret|password|passwd|auth|credential)s?(?:$|_|-)|apikey|authorization", re.IGNORECASE)
#: names that contain a secret-looking word but hold counts or settings
_NOT_SECRET = re.compile(
    r"(?:max|min)_?(?:new_|gen_)?tokens?|tokens?_(?:limit|budget)|\w*_tokens|(?:add_)?(?:eos|bos|pad|unk|sep|cls|mask)_token\w*",
    re.IGNORECASE,
)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def is_secret_name(name: str) -> bool:
    """Whether an argument called ``name`` holds a credential."""
    return bool(_SECRET_NAME.search(name)) and not _NOT_SECRET.fullmatch(name)


def redact_url(url: str) -> str:
    """``url`` without user-info password and with secret query values replaced."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}:{REDACTED}@{host}" if ":" in userinfo else f"{REDACTED}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(is_secret_name(k) for k, _ in pairs):
            query = urlencode([(k, REDACTED if is_secret_name(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_value(name: str, value: Any) -> Any:
    """``value`` of an argument called ``name``: hidden if secret, URLs inside redacted."""
    if is_secret_name(name) and value not in (None, ""):
        return REDACTED
    if isinstance(value, str):
        return _URL.sub(lambda m: redact_url(m.group(0)), value)
    return value


def redact_args(args: Any) -> Any:
    """Model arguments (a mapping, or lm-eval's ``k=v,k=v`` string) with secrets redacted."""
    if isinstance(args, Mapping):
        return {k: redact_args(v) if isinstance(v, Mapping) else redact_value(str(k), v) for k, v in args.items()}
    if isinstance(args, str):
        out = []
        for part in args.split(","):
            name, sep, value = part.partition("=")
            out.append(f"{name}{sep}{redact_value(name.strip(), value)}" if sep else redact_value("", part))
        return ",".join(out)
    return args


def secret_values(args: Any) -> set[str]:
    """Every secret string in model arguments (values of secret names, URL passwords and
    secret query values), for :func:`redact_text`."""
    found: set[str] = set()
    items: Iterable[tuple[str, Any]]
    if isinstance(args, Mapping):
        items = [(str(k), v) for k, v in args.items()]
    elif isinstance(args, str):
        items = [(p.partition("=")[0].strip(), p.partition("=")[2]) for p in args.split(",") if "=" in p]
    else:
        return found
    for name, value in items:
        if isinstance(value, Mapping):
            found |= secret_values(value)
            continue
        if not isinstance(value, str) or not value:
            continue
        if is_secret_name(name):
            found.add(value)
        for url in _URL.findall(value):
            found |= _url_secrets(url)
    return {v for v in found if len(v) >= 4}  # a one-letter "secret" would blank out text


def _url_secrets(url: str) -> set[str]:
    try:
        parts = urlsplit(url)
    except ValueError:
        return set()
    found = set()
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        found.add(userinfo.split(":", 1)[1] if ":" in userinfo else userinfo)
    found |= {v for k, v in parse_qsl(parts.query, keep_blank_values=True) if is_secret_name(k) and v}
    return found


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every value in ``secrets`` and every credential in a URL replaced."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return _URL.sub(lambda m: redact_url(m.group(0)), text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts ``secrets`` (and URL credentials) in every record."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = set(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message, self.secrets)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class RedactingStream:
    """A text stream that writes to ``stream`` with ``secrets`` redacted, line by line."""

    def __init__(self, stream: TextIO, secrets: Iterable[str]) -> None:
        self._stream = stream
        self._secrets = set(secrets)
        self._pending = ""

    def write(self, text: str) -> int:
        """Redact and pass on every complete line; keep a partial line until it ends."""
        self._pending += text
        if "\n" in self._pending:
            complete, self._pending = self._pending.rsplit("\n", 1)
            self._stream.write(redact_text(complete, self._secrets) + "\n")
        return len(text)

    def flush(self) -> None:
        """Write what is pending (redacted) and flush the underlying stream."""
        if self._pending:
            self._stream.write(redact_text(self._pending, self._secrets))
            self._pending = ""
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
