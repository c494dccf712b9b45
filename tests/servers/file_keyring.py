"""A stand-in for an OS keyring in tests: a keyring backend that keeps passwords in a JSON file.

Select it in a plugin process with PYTHON_KEYRING_BACKEND=tests.servers.file_keyring.FileKeyring,
PYTHONPATH=<repo root> and TEST_KEYRING_FILE=<path>. TEST_KEYRING_BROKEN=1 makes every call fail,
as a locked or unreachable keyring daemon would.
"""
from __future__ import annotations

import json
import os

from keyring.backend import KeyringBackend
from keyring.errors import KeyringError, PasswordDeleteError


class FileKeyring(KeyringBackend):
    priority = 1

    def _path(self) -> str:
        return os.environ["TEST_KEYRING_FILE"]

    def _load(self) -> dict:
        if os.environ.get("TEST_KEYRING_BROKEN"):
            raise KeyringError("the keyring daemon does not answer")
        try:
            with open(self._path()) as handle:
                return json.load(handle)
        except FileNotFoundError:
            return {}

    def _save(self, data: dict) -> None:
        with open(self._path(), "w") as handle:
            json.dump(data, handle)

    def get_password(self, service: str, username: str):
        return self._load().get(f"{service}/{username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        data = self._load()
        data[f"{service}/{username}"] = password
        self._save(data)

    def delete_password(self, service: str, username: str) -> None:
        data = self._load()
        if data.pop(f"{service}/{username}", None) is None:
            raise PasswordDeleteError(username)
        self._save(data)
