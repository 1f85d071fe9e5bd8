import pytest

from smartfarm_cli.targets.local import LocalTarget


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test sees the developer's settings, webhook or AWS credentials."""
    for name in (
        "SMARTFARM_HOME",
        "SMARTFARM_TARGET",
        "SMARTFARM_RULES",
        "SMARTFARM_DISCORD_WEBHOOK",
        "SMARTFARM_ALERT_SYNTHETIC",
        "ALERT_ON_SYNTHETIC",
        "AWS_PROFILE",
    ):
        monkeypatch.delenv(name, raising=False)
    # Trend buckets follow the farm's zone; tests pin it (tests of the default unset it).
    monkeypatch.setenv("SMARTFARM_TZ", "UTC")
    # Webhook tests talk to real local HTTP servers: the documented opt-in for loopback hosts
    # (core.webhook). Tests of the default refusal delete it.
    monkeypatch.setenv("SMARTFARM_WEBHOOK_ALLOW_LOOPBACK", "1")
    # The default home is the user's data folder (platformdirs honours XDG_DATA_HOME on Linux):
    # keep it inside the test's own folder, never the developer's real one.
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    for name in ("SMARTFARM_EMULATOR_URL", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_API_GATEWAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def target(tmp_path):
    t = LocalTarget(tmp_path / "home")
    yield t
    t.close()
