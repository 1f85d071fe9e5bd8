"""Render the ingest API's mapping templates the way API Gateway does (for tests).

The Velocity engine is airspeed-ext (the one LocalStack uses for API Gateway); the `$input`,
`$util` and `$context` objects below follow the API Gateway mapping-template reference:
`$input.json(path)` is a JSON string, `$input.path(path)` an object, `$util.escapeJavaScript`
is Java's StringEscapeUtils.escapeJavaScript (it escapes `'` too), and a template may set
`$context.responseOverride.status`.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import airspeed

TEMPLATES = Path(__file__).resolve().parents[1] / "terraform" / "templates"


def _jsonpath(document, path: str):
    """The small JSONPath subset the templates use: $, $.a.b, $.a[3]."""
    if not path.startswith("$"):
        raise ValueError(f"not a JSONPath: {path}")
    value = document
    for name, index in re.findall(r"\.(\w+)|\[(\d+)\]", path[1:]):
        if value is None:
            return None
        if name:
            value = value.get(name) if isinstance(value, dict) else None
        else:
            i = int(index)
            value = value[i] if isinstance(value, list) and i < len(value) else None
    return value


class Input:
    def __init__(self, body: str):
        self._body = body
        self._doc = json.loads(body) if body.strip() else {}

    def json(self, path: str) -> str:
        return json.dumps(_jsonpath(self._doc, path), separators=(",", ":"))

    def path(self, path: str):
        return _jsonpath(self._doc, path)

    @property
    def body(self) -> str:
        return self._body


def escape_javascript(value) -> str:
    """Java commons-lang StringEscapeUtils.escapeJavaScript, as API Gateway's $util uses it."""
    out = []
    for ch in "" if value is None else str(value):
        code = ord(ch)
        if ch in "'\"\\/":
            out.append("\\" + ch)
        elif ch in "\b\f\n\r\t":
            out.append({"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif code < 0x20 or code > 0x7E:
            out.append(f"\\u{code:04X}" if code <= 0xFFFF else ch)
        else:
            out.append(ch)
    return "".join(out)


class Util:
    def base64Encode(self, value) -> str:  # API Gateway's name
        return base64.b64encode(str(value).encode("utf-8")).decode("ascii")

    def escapeJavaScript(self, value) -> str:  # API Gateway's name
        return escape_javascript(value)


def render(
    template: str, body: str, variables: dict | None = None, api_key_id: str = "device-key-id"
) -> tuple[str, dict]:
    """(rendered text, $context.responseOverride) for a request/response `body`.

    `api_key_id` is `$context.identity.apiKeyId`, the id of the API key the request carried.
    """
    override: dict = {}
    context = {
        "responseOverride": override,
        "requestId": "test-request",
        "identity": {"apiKeyId": api_key_id},
    }
    text = airspeed.Template(template).merge(
        {"input": Input(body), "util": Util(), "context": context, **(variables or {})}
    )
    return text, override


def template(name: str, **tf_vars: str) -> str:
    """A template file with Terraform's templatefile() placeholders filled in."""
    text = (TEMPLATES / name).read_text(encoding="utf-8")
    for key, value in tf_vars.items():
        text = text.replace("${" + key + "}", value)
    return text
