"""`farmctl discord ...`: check the Discord webhook used for anomaly alerts.

Mounted by cli.py with `app.add_typer(discord_app, name="discord")`. On the aws target the SSM
parameter holding the webhook is named by the stack output `discord_webhook_ssm_parameter`;
cli.py wires that with `set_ssm_parameter_source(callable)` (called only when neither the flag
nor the environment variable gives a URL, so no AWS call happens otherwise).
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import typer

from .alerting import WEBHOOK_ENV, WebhookError, requests_post, resolve_webhook
from .terminal import fail, guarded

discord_app = typer.Typer(
    help="Discord alerts: send a test message to the configured webhook.",
    no_args_is_help=True,
)

# RetryPolicy fields for the test message (the core is imported only when it is sent).
TEST_POLICY: dict = {"max_attempts": 3, "timeout_s": 10.0, "max_total_s": 30.0}

# () -> (parameter name, ssm client) on aws, or None: the client carries the stack's region.
_ssm_parameter_source: Callable[[], tuple[str, object] | None] | None = None
_post: Callable = requests_post


def set_ssm_parameter_source(source: Callable[[], tuple[str, object] | None] | None) -> None:
    """Tell `discord test` how to find the SSM parameter (name, client) on aws, or None."""
    global _ssm_parameter_source
    _ssm_parameter_source = source


@discord_app.callback()
def _group() -> None:
    """Discord alerts: send a test message to the configured webhook."""


@discord_app.command("test")
@guarded
def test(
    webhook: str | None = typer.Option(
        None,
        "--webhook",
        help=f"Webhook URL to test (else ${WEBHOOK_ENV}, else the SSM parameter on aws).",
        show_default=False,
    ),
    ssm_parameter: str | None = typer.Option(
        None,
        "--ssm-parameter",
        help="SSM SecureString parameter holding the webhook URL (default: from stack outputs).",
        show_default=False,
    ),
) -> None:
    """Send a clearly labelled test message through the same path as real alerts.

    Example: SMARTFARM_DISCORD_WEBHOOK=https://discord.com/api/webhooks/<id>/<token>
    farmctl discord test   (on aws the URL comes from the stack's SSM parameter)
    """
    from .core import alerts, discord

    try:
        found = resolve_webhook(webhook, ssm_parameter=ssm_parameter)
        source = _ssm_parameter_source() if found is None and _ssm_parameter_source else None
        if source:
            name, client = source
            found = resolve_webhook(ssm_parameter=name, ssm_client=client)
    except WebhookError as exc:
        fail(str(exc), 2)
    if found is None:
        fail(
            "no Discord webhook configured. Pass --webhook URL, or set "
            f"{WEBHOOK_ENV}=https://discord.com/api/webhooks/<id>/<token> "
            "(on aws: put the URL in the SSM parameter named by the stack output "
            "discord_webhook_ssm_parameter).",
            2,
        )
    typer.echo(f"Sending a test message to {found.masked} (from {found.origin}) ...")
    payload = discord.build_test_message(f"farmctl on {socket.gethostname()}")
    result = alerts.send_message(_post, found.url, payload, alerts.RetryPolicy(**TEST_POLICY))
    if not result.delivered:
        reason = discord.redact(result.reason, found.url)
        hint = ""
        if result.http_status in (401, 403, 404):
            hint = "; check the webhook URL (it may have been deleted or mistyped)"
        elif result.http_status is None:
            hint = "; check the network connection and the URL's host"
        fail(f"test message not delivered: {reason}{hint}", 1)
    typer.secho(
        f"Delivered (HTTP {result.http_status}, {result.attempts} attempt(s)).",
        fg=typer.colors.GREEN,
    )
