"""What the Lambdas share around the core: S3 as an ObjectStore, the stdlib webhook POST and the
webhook URL read from SSM (cached). Clients are passed in: no AWS library is imported here.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request

from .webhook import no_redirect_opener

USER_AGENT = "smartfarm-lambda (aws lambda, 0.1)"
WEBHOOK_CACHE_S = 300.0
WEBHOOK_CACHE: dict[str, tuple[float, str]] = {}


class S3Store:
    """lake.ObjectStore over one S3 bucket."""

    def __init__(self, client, bucket: str):
        self.client = client
        self.bucket = bucket

    def get(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None
        except self.client.exceptions.ClientError as exc:
            # Without an unconditional s3:ListBucket, S3 answers 403 (not 404) for a missing
            # key. A prefix listing (allowed by a prefix-scoped ListBucket) tells them apart.
            if exc.response.get("Error", {}).get("Code") not in ("AccessDenied", "403"):
                raise
            listing = self.client.list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1)
            if any(o["Key"] == key for o in listing.get("Contents", [])):
                raise
            return None

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)


def urllib_post(url: str, body: dict, timeout: float):
    """One JSON POST with the stdlib; an HTTP error status is returned, not raised."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
    )
    try:
        # No redirect is followed and only http(s) is handled (core.webhook): a 3xx is an answer.
        with no_redirect_opener().open(request, timeout=timeout) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers.items()), exc.read()
    except http.client.HTTPException as exc:
        raise ConnectionError(f"bad HTTP answer: {type(exc).__name__}") from None


def webhook_from_ssm(ssm_client_factory):
    name = os.environ.get("DISCORD_WEBHOOK_SSM_PARAMETER", "").strip()

    def resolve() -> str | None:
        if not name:
            return None
        cached = WEBHOOK_CACHE.get(name)
        if cached and time.monotonic() - cached[0] < WEBHOOK_CACHE_S:
            return cached[1]
        value = ssm_client_factory().get_parameter(Name=name, WithDecryption=True)
        url = value["Parameter"]["Value"].strip()
        WEBHOOK_CACHE[name] = (time.monotonic(), url)
        return url

    return resolve
