"""Where alerts may be sent, and how: one rule for the CLI, the local target and the Lambdas.

A Discord webhook URL carries its secret token in the path, and whoever holds the URL decides
where that token (and every alert) goes. So before any request:

- only `https://` to `discord.com`, `discordapp.com`, `ptb.discord.com` or `canary.discord.com`
  on the default port, without user info, with the path `/api[/v<N>]/webhooks/<id>/<token>`
  (an optional query such as `thread_id` is kept). Anything else (`http://`, `file://`, another
  host, another path) is refused with a reason that never quotes the URL;
- `SMARTFARM_WEBHOOK_ALLOW_LOOPBACK=1` is the explicit opt-in for a local test server: it also
  accepts `http(s)://` on a loopback host (`localhost`, 127.0.0.0/8, `::1`) with the same path.
  Nothing in the deployed stack sets it;
- redirects are never followed: `requests` is called with `allow_redirects=False`, and urllib goes
  through `no_redirect_opener()`, which has no redirect handler (a 3xx is a failed delivery) and
  handles http(s) only (no `file:`, `ftp:` or `data:` handlers).

Pure standard library (zipped into the Lambdas).
"""

from __future__ import annotations

import ipaddress
import os
import re
import urllib.request
from collections.abc import Mapping
from urllib.parse import urlsplit

ALLOW_LOOPBACK_ENV = "SMARTFARM_WEBHOOK_ALLOW_LOOPBACK"
DISCORD_HOSTS = frozenset(
    {"discord.com", "discordapp.com", "ptb.discord.com", "canary.discord.com"}
)
EXPECTED = "https://discord.com/api/webhooks/<id>/<token>"
_PATH = re.compile(r"/api(?:/v\d{1,3})?/webhooks/\d{1,30}/[A-Za-z0-9_-]{1,200}/?")
_TRUE = ("1", "true", "yes")


class WebhookURLError(ValueError):
    """The URL is not an allowed webhook URL; the message says why (without the URL)."""


def loopback_allowed(env: Mapping[str, str] | None = None) -> bool:
    """True when the local-test-server opt-in is set."""
    env = os.environ if env is None else env
    return env.get(ALLOW_LOOPBACK_ENV, "").strip().lower() in _TRUE


def is_loopback_host(host: str) -> bool:
    """`localhost` or a loopback IP literal (127.0.0.0/8, ::1); never a DNS lookup."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_webhook_url(url: str, env: Mapping[str, str] | None = None) -> str:
    """`url` (stripped) when alerts may be sent to it; else WebhookURLError saying why."""
    if not isinstance(url, str):
        raise WebhookURLError(f"the webhook URL is not text; expected {EXPECTED}")
    url = url.strip()
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        raise WebhookURLError(f"the webhook URL is malformed; expected {EXPECTED}") from None
    scheme = parts.scheme.lower()
    test_server = loopback_allowed(env) and is_loopback_host(host)
    if scheme != "https" and not (test_server and scheme == "http"):
        shown = f"{scheme}://" if scheme else "no scheme"
        raise WebhookURLError(
            f"the webhook URL uses {shown}; only https:// is allowed (expected {EXPECTED})"
        )
    if not test_server:
        if host not in DISCORD_HOSTS:
            raise WebhookURLError(
                f"the webhook host {host or '(none)'!r} is not Discord's; allowed: "
                f"{', '.join(sorted(DISCORD_HOSTS))} (or set {ALLOW_LOOPBACK_ENV}=1 for a "
                "local test server)"
            )
        if port not in (None, 443):
            raise WebhookURLError(f"the webhook URL names port {port}; Discord's is 443")
    if parts.username is not None or parts.password is not None:
        raise WebhookURLError("the webhook URL holds user info (user@host); remove it")
    if parts.fragment:
        raise WebhookURLError("the webhook URL holds a #fragment; remove it")
    if not _PATH.fullmatch(parts.path):
        raise WebhookURLError(
            f"the webhook URL's path is not /api/webhooks/<id>/<token>; expected {EXPECTED}"
        )
    return url


def no_redirect_opener() -> urllib.request.OpenerDirector:
    """An urllib opener for http(s) only that follows no redirect (a 3xx raises HTTPError)."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
        urllib.request.UnknownHandler(),  # file:, ftp:, data: ... raise URLError
    ):
        opener.add_handler(handler)
    return opener
