"""Webhook signatures: what collab signs verifies with the Standard Webhooks reference code."""

from __future__ import annotations

import base64
import json
import time

import pytest
from standardwebhooks.webhooks import Webhook as ReferenceWebhook
from standardwebhooks.webhooks import WebhookVerificationError as ReferenceError

from collab.webhooks import WebhookVerificationError, headers_for, verify

SECRET = "whsec_" + base64.b64encode(b"a secret of thirty-two bytes!!!!").decode()
BODY = json.dumps({"type": "doc.persisted", "data": {"doc": "notes"}}).encode()


def test_signature_verifies_with_the_reference_library() -> None:
    headers = headers_for([SECRET], "msg_1", int(time.time()), BODY)
    payload = ReferenceWebhook(SECRET).verify(BODY, headers)
    assert payload["data"]["doc"] == "notes"
    assert verify(SECRET, headers, BODY)["type"] == "doc.persisted"


def test_tampered_body_fails_verification() -> None:
    headers = headers_for([SECRET], "msg_1", int(time.time()), BODY)
    tampered = BODY.replace(b"notes", b"other")
    with pytest.raises(ReferenceError):
        ReferenceWebhook(SECRET).verify(tampered, headers)
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, headers, tampered)


def test_stale_timestamp_fails_verification() -> None:
    headers = headers_for([SECRET], "msg_1", int(time.time()) - 3600, BODY)
    with pytest.raises(ReferenceError):
        ReferenceWebhook(SECRET).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, headers, BODY)


def test_wrong_secret_fails_verification() -> None:
    other = "whsec_" + base64.b64encode(b"another secret of 32 bytes!!!!!!").decode()
    headers = headers_for([SECRET], "msg_1", int(time.time()), BODY)
    with pytest.raises(ReferenceError):
        ReferenceWebhook(other).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        verify(other, headers, BODY)


def test_rotated_secrets_sign_side_by_side() -> None:
    new = "whsec_" + base64.b64encode(b"the next secret, 32 bytes long!!").decode()
    headers = headers_for([SECRET, new], "msg_2", int(time.time()), BODY)
    assert len(headers["webhook-signature"].split()) == 2
    ReferenceWebhook(SECRET).verify(BODY, headers)
    ReferenceWebhook(new).verify(BODY, headers)
