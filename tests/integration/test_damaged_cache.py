"""A cache entry that exists but cannot be read (corrupt, or larger than the cache reads) must not
make logout say "already logged out" and leave it on disk with whatever secret it holds."""
from __future__ import annotations

import pytest

from tests.integration.harness import run_with_person


@pytest.mark.parametrize("damage", [
    pytest.param(lambda raw: raw[: len(raw) // 2], id="truncated"),
    pytest.param(lambda raw: raw[:-1] + b" " * (2 << 20) + b"}", id="larger-than-the-read-limit"),
])
def test_logout_removes_an_entry_it_cannot_read_and_says_so(fast_provider, iam_site, workspace, damage):
    iam_site(fast_provider)
    login, shown = run_with_person(workspace, fast_provider, ["kubectl-iam", "login", "--no-browser"])
    assert shown and login.returncode == 0, login.stderr
    (entry,) = workspace.cache.glob("*.json")
    entry.write_bytes(damage(entry.read_bytes()))  # the refresh token is still in there

    status = workspace.run("kubectl-iam", "status")
    assert status.returncode == 0 and "cache entry unusable" in status.stdout, status.stdout + status.stderr

    logout = workspace.run("kubectl-iam", "logout")
    assert logout.returncode == 0, logout.stderr
    assert "removed a cache entry that could not be read" in logout.stderr
    assert "already logged out" not in logout.stderr
    assert not entry.exists()
