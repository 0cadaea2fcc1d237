"""The webhook rules without I/O: signature, outcomes, backoff, Retry-After, destinations."""

from __future__ import annotations

import hashlib
import hmac
import random
from datetime import UTC, datetime, timedelta

import pytest

from registry_server.domain import webhooks as dw
from registry_server.errors import InvalidArgument

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_signature_is_hmac_sha256_of_delivery_timestamp_and_body():
    body = b'{"delivery":"d1"}'
    expected = hmac.new(b"s3cret-s3cret-s3cret", b"d1.1700000000." + body, hashlib.sha256).hexdigest()
    assert dw.signature("s3cret-s3cret-s3cret", "d1", 1700000000, body) == "v1=" + expected


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, dw.Outcome.DELIVERED),  # any 2xx is accepted
        (204, dw.Outcome.DELIVERED),
        (None, dw.Outcome.RETRY),  # timeout or connection error
        (429, dw.Outcome.RETRY),  # rate limited: come back later
        (500, dw.Outcome.RETRY),
        (503, dw.Outcome.RETRY),
        (400, dw.Outcome.FAIL),  # the receiver refuses this payload: retrying will not help
        (410, dw.Outcome.FAIL),  # gone
        (404, dw.Outcome.FAIL),
        (301, dw.Outcome.FAIL),  # redirects are not followed
    ],
)
def test_outcome_of_a_response(status, outcome):
    assert dw.outcome(status) is outcome


def test_backoff_doubles_with_jitter_in_the_upper_half_and_stops_at_the_maximum():
    policy = dw.RetryPolicy(first=1.0, maximum=8.0)
    rng = random.Random(7)
    for attempts, step in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, 8.0)]:
        waits = [policy.backoff(attempts, rng) for _ in range(200)]
        assert step / 2 <= min(waits) and max(waits) <= step
        assert max(waits) - min(waits) > step / 4  # jittered, not fixed


def test_retry_after_wins_over_the_backoff_and_the_window_ends_retries():
    policy = dw.RetryPolicy(first=1.0, maximum=60.0, window=timedelta(seconds=100))
    assert policy.next_attempt(1, 30.0, NOW, NOW) == NOW + timedelta(seconds=30)
    assert policy.next_attempt(1, 90.0, NOW, NOW) == NOW + timedelta(seconds=90)  # longer than the maximum: asked
    assert policy.next_attempt(1, 600.0, NOW, NOW) is None  # past the window
    assert policy.next_attempt(1, 30.0, NOW, NOW + timedelta(seconds=80)) is None  # would land past the window


def test_retry_after_takes_seconds_or_an_http_date():
    assert dw.parse_retry_after("120") == 120.0
    assert dw.parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", NOW) == 30.0
    assert dw.parse_retry_after("soon") is None and dw.parse_retry_after(None) is None


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.5", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("93.184.216.34", ""),
        ("2606:4700::1111", ""),
    ],
)
def test_forbidden_addresses(address, why):
    assert dw.forbidden_address(address) == why


def test_a_webhook_matches_its_project_types_and_models_only():
    hook = dw.Webhook("h", "team", "https://x", ("STAGE_CHANGED",), ("det",), "ana", NOW, 0)
    assert hook.matches("STAGE_CHANGED", "det", "team")
    assert not hook.matches("STAGE_CHANGED", "det", "other")  # never another project's
    assert not hook.matches("STAGE_CHANGED", "seg", "team")
    assert not hook.matches("VERSION_READY", "det", "team")
    assert not hook.matches("ACCESS_CHANGED", "", None)


def test_names_urls_secrets_and_types_are_checked():
    assert dw.validate_name("webhooks/ci-1") == "ci-1"
    for bad in ("", "a b", "webhooks/", "-x"):
        with pytest.raises(InvalidArgument):
            dw.validate_name(bad)
    assert dw.validate_url("https://ci.example/hook") == ("https", "ci.example", 443)
    assert dw.validate_url("http://ci.example:8080/") == ("http", "ci.example", 8080)
    for bad in ("", "ci.example/hook", "file:///etc/passwd", "http:///x", "http://u:p@ci.example/"):
        with pytest.raises(InvalidArgument):
            dw.validate_url(bad)
    with pytest.raises(InvalidArgument, match="at least 16"):
        dw.validate_secret("short")
    with pytest.raises(InvalidArgument, match="never sent"):
        dw.check_types(["ACCESS_CHANGED"])
    assert dw.check_types(["STAGE_CHANGED", "STAGE_CHANGED"]) == ("STAGE_CHANGED",)
