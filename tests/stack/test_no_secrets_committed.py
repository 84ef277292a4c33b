"""No tracked file holds key material; the same patterns the security checks use on manifests."""

from __future__ import annotations

import subprocess

from base_platform.checks.security import SECRET_VALUE
from tests.conftest import ROOT


def test_no_private_keys_or_cloud_keys_in_tracked_files() -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True).stdout
    found = []
    for name in filter(None, files.split("\0")):
        path = ROOT / name
        if not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        found += [f"{name}: {m.group(0)[:12]}..." for m in SECRET_VALUE.finditer(text)]
    assert found == []
