"""AWS failures -> one line saying what went wrong and what to do (FarmctlError, exit code 1).

botocore and awswrangler are only looked at by class name and module here, so importing this
module costs nothing.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator

from ..core.queries import QueryError
from ..errors import FarmctlError

ACCESS_DENIED = {
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnauthorizedAccess",
    "AuthorizationError",
    "AuthorizationErrorException",
    "Forbidden",
    "KMSAccessDeniedException",
}
NOT_FOUND = {
    "ResourceNotFoundException",
    "ResourceNotFound",
    "NoSuchBucket",
    "NoSuchKey",
    "NotFound",
    "NotFoundException",
    "EntityNotFoundException",
    "ParameterNotFound",
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
}
EXPIRED = {
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "TokenRefreshRequired",
}
INVALID_CREDENTIALS = {
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
}
THROTTLED = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "SlowDown",
    "RequestThrottled",
    "RequestThrottledException",
}


def _profile_hint(profile: str | None) -> str:
    return f" --profile {profile}" if profile else ""


def _first_line(text: str) -> str:
    text = (text or "").strip()
    return text.splitlines()[0] if text else ""


def translate(exc: BaseException, region: str | None = None, profile: str | None = None):
    """A FarmctlError for a known AWS failure, or None to let the exception through."""
    if isinstance(exc, FarmctlError):
        return exc
    module = type(exc).__module__ or ""
    kind = type(exc).__name__
    where = f" in {region}" if region else ""
    who = f"profile {profile}" if profile else "the current AWS credentials"
    is_client_error = hasattr(exc, "response") and hasattr(exc, "operation_name")
    if module.startswith("botocore") and is_client_error:
        error = exc.response.get("Error", {}) if isinstance(exc.response, dict) else {}
        code = str(error.get("Code", "") or "")
        message = _first_line(str(error.get("Message", "") or ""))
        op = exc.operation_name
        if code == "InvalidRequestException" and op == "StartQueryExecution":
            return QueryError(f"Athena refused the query: {message}")
        if code in ACCESS_DENIED or code.startswith("AccessDenied"):
            return FarmctlError(
                f"AWS denied {op} ({code}) for {who}: use credentials allowed to operate the "
                "smartfarm stack (see terraform/iam.tf), e.g. --profile <admin-profile>"
            )
        if code in EXPIRED or code.startswith("ExpiredToken"):
            return FarmctlError(
                f"the AWS credentials have expired ({code} in {op}): refresh them, e.g. "
                f"`aws sso login{_profile_hint(profile)}`, and run the command again"
            )
        if code in INVALID_CREDENTIALS:
            return FarmctlError(
                f"AWS does not recognise the credentials ({code} in {op}): check "
                "AWS_ACCESS_KEY_ID / AWS_PROFILE, or run `aws configure`"
            )
        if code in THROTTLED or code.startswith("Throttl"):
            return FarmctlError(
                f"AWS throttled {op} ({code}) even after retries: wait a minute and run the "
                "command again, or send smaller and slower batches"
            )
        if code in NOT_FOUND or code.startswith("NoSuch") or code.endswith("NotFound"):
            detail = f": {message}" if message else ""
            return FarmctlError(
                f"{op} found no such resource{where} ({code}{detail}): the stack may be "
                "destroyed or in another region; run `farmctl deploy` or check --region"
            )
        detail = f": {message}" if message else ""
        return FarmctlError(f"AWS {op} failed ({code}{detail})")
    if module.startswith("botocore"):
        if kind in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
            return FarmctlError(
                "no usable AWS credentials: run `aws configure` or `aws sso login`, or set "
                "AWS_PROFILE (or --profile)"
            )
        if kind == "ProfileNotFound":
            return FarmctlError(
                f"AWS profile {profile!r} is not configured: check ~/.aws/config or pass "
                "another --profile"
            )
        if kind == "NoRegionError":
            return FarmctlError(
                "no AWS region is set: pass --region or set AWS_REGION (the stack outputs name "
                "the region once deployed)"
            )
        if kind in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError"):
            return FarmctlError(
                f"cannot reach AWS{where} ({_first_line(str(exc))}): check the network and "
                "that the region name is right"
            )
        if kind == "ReadTimeoutError":
            return FarmctlError(f"AWS did not answer in time{where}: run the command again")
        if kind in ("SSOTokenLoadError", "UnauthorizedSSOTokenError", "TokenRetrievalError"):
            return FarmctlError(
                f"the AWS SSO session has expired: run `aws sso login{_profile_hint(profile)}`"
            )
        return FarmctlError(f"AWS client error: {_first_line(str(exc))}")
    if module.startswith("awswrangler"):
        reason = _first_line(str(exc))
        if kind == "QueryFailed":
            if "access denied" in reason.lower() or "not authorized" in reason.lower():
                return FarmctlError(
                    f"Athena could not read or write S3 ({reason}): use credentials allowed to "
                    "query the smartfarm workgroup"
                )
            return QueryError(f"Athena: {reason}")
        if kind == "QueryCancelled":
            return FarmctlError(f"the Athena query was cancelled: {reason}")
        return FarmctlError(f"awswrangler: {reason}")
    return None


@contextlib.contextmanager
def aws_errors(context: Callable[[], tuple[str | None, str | None]]) -> Iterator[None]:
    """Map AWS failures; `context()` gives (region, profile) once the failure is known."""
    try:
        yield
    except (FarmctlError, QueryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        mapped = translate(exc, *context())
        if mapped is None:
            raise
        raise mapped from None


def mapped(fn):
    """Method decorator: AWS failures inside `fn` end as one-line FarmctlErrors."""

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(self, *args, **kwargs):
            with aws_errors(self.error_context):
                yield from fn(self, *args, **kwargs)

        return generator

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        with aws_errors(self.error_context):
            return fn(self, *args, **kwargs)

    return wrapper
