"""Load a Lambda handler module from lambdas/<name>/handler.py (as the zip would run it)."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load(name: str):
    module_name = f"reliability_{name}_handler"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = ROOT / "lambdas" / name / "handler.py"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def moto_buckets(*buckets: str):
    """A moto S3 client with fake credentials and the given buckets (for Lambda handlers)."""
    import boto3
    import pytest
    from moto import mock_aws

    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            mp.setenv(name, "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        with mock_aws():
            client = boto3.client("s3")
            for bucket in buckets:
                client.create_bucket(Bucket=bucket)
            yield client
