"""The emulated-apply harness skips with one clear reason on a machine without its tools."""

from __future__ import annotations

import tf_emulator as emu


def test_skip_reason_names_the_missing_terraform(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert emu.skip_reason().startswith("no terraform binary on PATH")


def test_skip_reason_names_the_missing_mirror_and_finds_one(monkeypatch, tmp_path):
    fake = tmp_path / "bin" / "terraform"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    monkeypatch.setattr(emu, "MIRROR_CANDIDATES", (str(tmp_path / "none"),))
    assert emu.skip_reason().startswith("no offline mirror of the hashicorp/aws provider")
    plugin = tmp_path / "mirror/registry.terraform.io/hashicorp/aws/5.100.0/linux_amd64"
    plugin.mkdir(parents=True)
    (plugin / "terraform-provider-aws_v5.100.0_x5").write_text("")
    monkeypatch.setattr(emu, "MIRROR_CANDIDATES", (str(tmp_path / "mirror"),))
    monkeypatch.setattr(emu, "locked_version", lambda: "5.100.0")
    assert emu.skip_reason() is None
    assert emu.find_mirror() == (tmp_path / "mirror", "5.100.0", ("5.100.0",))
    # a mirror without the version the committed lock file pins cannot init the stack
    monkeypatch.setattr(emu, "locked_version", lambda: "6.25.0")
    assert "pins 6.25.0" in emu.skip_reason()


def test_the_committed_lock_file_pins_a_version_the_constraint_allows():
    import re

    versions = (emu.REPO / "terraform" / "versions.tf").read_text()
    lock = (emu.REPO / "terraform" / emu.LOCK_FILE).read_text()
    assert emu.locked_version() == "5.100.0"
    assert 'version = ">= 5.100, < 7.0"' in versions
    assert 'constraints = ">= 5.100.0, < 7.0.0"' in lock  # init leaves it as it is
    assert re.search(r'"h1:[A-Za-z0-9+/]{43}="', lock)  # at least one platform's hash
