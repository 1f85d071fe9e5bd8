"""The API key devices send as `x-api-key`: where it comes from, and how it is shown.

Order: $SMARTFARM_API_KEY, else `--api-key-file FILE`, else `<home>/serve-api-key`, generated on
first run (32 random bytes, URL-safe, file mode 0600). The key is only ever shown masked, except
by `farmctl serve --show-key`, which prints it once for setting up devices.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

API_KEY_ENV = "SMARTFARM_API_KEY"
KEY_FILE_NAME = "serve-api-key"
MIN_KEY_LENGTH = 20  # API Gateway's minimum for an API key value


@dataclass(frozen=True)
class ApiKey:
    value: str
    origin: str  # "$SMARTFARM_API_KEY", "--api-key-file <path>" or "generated into <path>" ...

    @property
    def masked(self) -> str:
        return f"{self.value[:4]}{'*' * 8} ({len(self.value)} characters)"

    def matches(self, offered: str | None) -> bool:
        if not offered:
            return False
        return hmac.compare_digest(offered.encode(), self.value.encode())

    def __repr__(self) -> str:  # never the value, even in a traceback
        return f"ApiKey({self.masked!r}, origin={self.origin!r})"

    __str__ = __repr__


def _check(value: str, origin: str) -> str:
    value = value.strip()
    if len(value) < MIN_KEY_LENGTH:
        raise UserError(
            f"the API key from {origin} is shorter than {MIN_KEY_LENGTH} characters; use a "
            "longer random key (or leave it unset and let farmctl generate one)"
        )
    if any(c.isspace() or not c.isprintable() for c in value):
        raise UserError(f"the API key from {origin} contains spaces or control characters")
    return value


def load_api_key(home: Path, key_file: Path | None = None, env=os.environ) -> ApiKey:
    from_env = env.get(API_KEY_ENV)
    if from_env:
        return ApiKey(_check(from_env, f"${API_KEY_ENV}"), f"${API_KEY_ENV}")
    if key_file is not None:
        origin = f"--api-key-file {key_file}"
        try:
            text = key_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError(f"no such API key file: {key_file}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read the API key file {key_file}: {exc}") from None
        return ApiKey(_check(text, origin), origin)
    path = home / KEY_FILE_NAME
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, 0o600)  # it is ours: tighten instead of refusing
        return ApiKey(_check(path.read_text(encoding="utf-8"), str(path)), str(path))
    home.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    return ApiKey(value, f"generated into {path}")
