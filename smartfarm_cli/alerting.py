"""CLI side of the Discord alerts: the requests-based sender, webhook resolution, local hook.

The webhook URL comes from, in order: `--webhook URL`, the environment variable
`SMARTFARM_DISCORD_WEBHOOK`, and (aws target) the SSM SecureString parameter whose name the
stack outputs give (`discord_webhook_ssm_parameter`). It is never printed in full: use
`core.discord.mask_webhook_url`. Only Discord webhook URLs are accepted (`core.webhook`, the same
allow-list the Lambda applies) and redirects are never followed.

requests, boto3, pyarrow and the core are imported inside the functions that need them:
`farmctl --help` must not pay for them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import UserError

if TYPE_CHECKING:  # the core loads only when an alert is actually sent
    from .core.alerts import AlertOutcome, RetryPolicy

WEBHOOK_ENV = "SMARTFARM_DISCORD_WEBHOOK"
USER_AGENT = "smartfarm-cli (farmctl alerts, 0.1)"

log = logging.getLogger("smartfarm.alerts")


class WebhookError(UserError):
    """The webhook URL is malformed or could not be read; the message says what to do."""


@dataclass(frozen=True)
class Webhook:
    url: str
    origin: str  # "--webhook", "SMARTFARM_DISCORD_WEBHOOK" or "SSM parameter <name>"

    @property
    def masked(self) -> str:
        from .core.discord import mask_webhook_url

        return mask_webhook_url(self.url)

    def __repr__(self) -> str:  # never the token, even in a debugger or a traceback
        return f"Webhook(url={self.masked!r}, origin={self.origin!r})"

    __str__ = __repr__


def requests_post(url: str, body: dict, timeout: float) -> tuple[int, Mapping[str, str], bytes]:
    """One POST with requests; network failures raise (requests' errors are OSErrors)."""
    import requests

    response = requests.post(
        url, json=body, timeout=timeout, headers={"User-Agent": USER_AGENT}, allow_redirects=False
    )
    return response.status_code, dict(response.headers), response.content


def check_url(url: str, origin: str) -> str:
    """The URL when alerts may go to it (core.webhook's allow-list); else one clear WebhookError."""
    from .core.webhook import WebhookURLError, check_webhook_url

    try:
        return check_webhook_url(url)
    except WebhookURLError as exc:
        raise WebhookError(f"the Discord webhook from {origin} is refused: {exc}") from None


def fetch_ssm_parameter(name: str, ssm_client=None) -> str:
    """A SecureString parameter's value (decrypted). Raises WebhookError with a clear reason."""
    try:
        if ssm_client is None:
            import boto3

            ssm_client = boto3.client("ssm")
        response = ssm_client.get_parameter(Name=name, WithDecryption=True)
        return response["Parameter"]["Value"]
    except WebhookError:
        raise
    except Exception as exc:  # botocore errors: credentials, missing parameter, access denied
        code = getattr(exc, "response", {}).get("Error", {}).get("Code") or type(exc).__name__
        raise WebhookError(
            f"cannot read the Discord webhook from SSM parameter {name} ({code}); check the "
            "parameter exists and your AWS credentials may read it, or pass --webhook"
        ) from None


def resolve_webhook(
    flag: str | None = None,
    ssm_parameter: str | None = None,
    env: Mapping[str, str] | None = None,
    ssm_client=None,
) -> Webhook | None:
    """flag > $SMARTFARM_DISCORD_WEBHOOK > SSM parameter `ssm_parameter`; None when none is set."""
    env = os.environ if env is None else env
    if flag:
        return Webhook(check_url(flag, "--webhook"), "--webhook")
    if env.get(WEBHOOK_ENV, "").strip():
        return Webhook(check_url(env[WEBHOOK_ENV], WEBHOOK_ENV), WEBHOOK_ENV)
    if ssm_parameter:
        origin = f"SSM parameter {ssm_parameter}"
        return Webhook(check_url(fetch_ssm_parameter(ssm_parameter, ssm_client), origin), origin)
    return None


@dataclass
class LocalAlertHook:
    """`AlertHook` for LocalTarget: send each file's incident message through the core.

    Outcomes are kept in `outcomes` (for the CLI to report) and logged on the
    `smartfarm.alerts` logger; an undelivered alert is recorded in the spike store and retried
    when the same file is processed again.
    """

    store: object  # lake.ObjectStore (the target's spike store)
    webhook: Webhook
    post: Callable = requests_post
    sleep: Callable[[float], None] = time.sleep
    policy: RetryPolicy | None = None
    outcomes: list[AlertOutcome] = field(default_factory=list)

    def __call__(self, source_key: str, message: dict, count: int) -> AlertOutcome:
        """Send one source's message (its incident events) once; the outcome is returned."""
        from .core import alerts
        from .core.discord import redact

        outcome = alerts.deliver_message(
            self.store,
            source_key,
            message,
            count,
            self.post,
            self.webhook.url,
            sleep=self.sleep,
            policy=self.policy or alerts.DEFAULT_POLICY,
        )
        self.outcomes.append(outcome)
        if outcome.status == alerts.UNDELIVERED:
            log.warning(
                "Discord alert for %s not delivered: %s (kept; retried by the next delivery "
                "or `farmctl check`)",
                source_key,
                redact(outcome.reason, self.webhook.url),
            )
        else:
            log.info("Discord alert for %s: %s", source_key, outcome.status)
        return outcome


def local_alert_hook(
    target,
    webhook: str | None = None,
    env: Mapping[str, str] | None = None,
    post: Callable | None = None,
    sleep: Callable[[float], None] = time.sleep,
    policy: RetryPolicy | None = None,
) -> LocalAlertHook | None:
    """A hook for `LocalTarget(alert_hook=...)`, or None when no webhook is configured.

    `target` is anything with a `spike_store` (get/put), e.g. the LocalTarget itself; the hook
    reads `target.spike_store` at call time, so it may be built before or after the target.
    Raises WebhookError when the configured URL is malformed.
    """
    resolved = resolve_webhook(webhook, env=env)
    if resolved is None:
        return None
    return LocalAlertHook(_SpikeStoreOf(target), resolved, post or requests_post, sleep, policy)


class _SpikeStoreOf:
    """Delegates to `target.spike_store`, looked up on each call."""

    def __init__(self, target):
        self._target = target

    def get(self, key: str) -> bytes | None:
        return self._target.spike_store.get(key)

    def put(self, key: str, data: bytes) -> None:
        self._target.spike_store.put(key, data)
