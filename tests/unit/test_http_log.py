"""--debug shows each exchange with every secret redacted (docs/security.md), in any body shape."""
from __future__ import annotations

import datetime
import json

import requests

from kubectl_caas import http_log
from kubectl_caas.http_log import REDACTED


def exchange(url: str, sent: bytes, answer: bytes, headers: dict) -> requests.Response:
    request = requests.Request("POST", url, data=sent, headers=headers).prepare()
    response = requests.Response()
    response.request, response.status_code, response.reason = request, 201, "Created"
    response.headers.update({"X-Subject-Token": "gAAAA-subject", "Content-Type": "application/json"})
    response.elapsed = datetime.timedelta(seconds=0.25)
    response._content = answer
    return response


def test_secret_values_are_redacted_at_any_depth_and_the_rest_is_kept():
    body = {"auth": {"identity": {"password": {"user": {"name": "alice", "password": "hunter2"}}},
                     "application_credential": {"id": "ac1", "secret": "s3"}},
            "tokens": [{"refresh_token": "rt", "expires_in": 60}], "empty_token": ""}
    shown = json.loads(http_log.redact_body(json.dumps(body).encode()))
    assert shown["auth"]["identity"]["password"]["user"] == {"name": "alice", "password": REDACTED}
    assert shown["auth"]["application_credential"] == {"id": "ac1", "secret": REDACTED}
    assert shown["tokens"] == [{"refresh_token": REDACTED, "expires_in": 60}]
    assert shown["empty_token"] == ""  # nothing to hide, and seeing it empty helps


def test_json_with_a_byte_order_mark_is_still_redacted():
    shown = http_log.redact_body(b'\xef\xbb\xbf{"access_token": "at-1"}')
    assert "at-1" not in shown and REDACTED in shown


def test_form_bodies_and_query_strings_are_redacted():
    form = http_log.redact_body(b"grant_type=urn%3Aietf&device_code=dc-1&client_secret=cs-1&client_id=c1")
    assert "dc-1" not in form and "cs-1" not in form and "client_id=c1" in form


def test_the_printed_exchange_hides_secret_headers_bodies_and_query_values(capsys):
    response = exchange("https://idp.example.org/token?code_verifier=cv-1&state=s",
                        b'{"passcode": "123456", "user": "alice"}', b'{"id_token": "id-1", "token_type": "Bearer"}',
                        {"Authorization": "Basic YWxpY2U6aHVudGVyMg==", "Content-Type": "application/json"})
    http_log.log_exchange(response, response._content)
    printed = capsys.readouterr().err
    for secret in ("cv-1", "123456", "id-1", "YWxpY2U6aHVudGVyMg==", "gAAAA-subject"):
        assert secret not in printed
    assert "> POST https://idp.example.org/token?code_verifier=%3Credacted%3E&state=s" in printed
    assert '"user": "alice"' in printed and '"token_type": "Bearer"' in printed
    assert "< HTTP 201 Created (0.250 s)" in printed


def test_control_characters_from_a_server_are_escaped_in_the_log(capsys):
    response = exchange("https://idp.example.org/token", b"", b"oops\x1b[2J", {})
    http_log.log_exchange(response, response._content)
    printed = capsys.readouterr().err
    assert "\x1b" not in printed and "oops" in printed
