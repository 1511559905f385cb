"""The store-staff settings refuse what could only fail later: a plain PIN, a webhook that is no URL, an
unknown time zone -- in one line at start, never echoing the secret."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edge.pin import hash_pin, verify_pin
from edge.settings import Settings, describe_errors


def refusal(**values: object) -> str:
    with pytest.raises(ValidationError) as caught:
        Settings(**values)
    return describe_errors(caught.value)


def test_the_pin_is_taken_only_as_a_digest() -> None:
    digest = hash_pin("246810", iterations=1000)
    settings = Settings(staff_pin_digest=digest)
    assert settings.staff_pin_digest is not None and verify_pin("246810", settings.staff_pin_digest.get_secret_value())
    message = refusal(staff_pin_digest="246810")
    assert "KIOSK_STAFF_PIN_DIGEST" in message and "edge staff-pin" in message and "246810" not in message


@pytest.mark.parametrize(
    "url",
    ["ftp://hooks.store.cn/x", "hooks.store.cn/robot?key=abc", "https:///nohost", "https://example.com/hook"],
)
def test_a_webhook_must_be_a_real_http_url(url: str) -> None:
    message = refusal(staff_webhook_url=url)
    assert "KIOSK_STAFF_WEBHOOK_URL" in message and url not in message


def test_a_chat_groups_webhook_is_taken() -> None:
    url = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6-7xxx"
    settings = Settings(staff_webhook_url=url, staff_webhook_format="wecom")
    assert settings.staff_webhook_url is not None and settings.staff_webhook_url.get_secret_value() == url
    assert url not in repr(settings)


def test_the_store_time_zone_is_an_iana_name() -> None:
    assert Settings(store_timezone="Asia/Shanghai").store_timezone == "Asia/Shanghai"
    assert "KIOSK_STORE_TIMEZONE" in refusal(store_timezone="Beijing Time")
    assert "KIOSK_STORE_TIMEZONE" in refusal(store_timezone="../../etc/passwd")


def test_the_staff_page_url_in_alerts_is_an_http_address() -> None:
    assert Settings().staff_page_url is None
    assert (
        Settings(staff_page_url=" http://192.168.1.20:8080/staff ").staff_page_url == "http://192.168.1.20:8080/staff"
    )
    assert Settings(staff_page_url="").staff_page_url is None
    for wrong in ("192.168.1.20:8080/staff", "/staff", "javascript:alert(1)"):
        assert "KIOSK_STAFF_PAGE_URL" in refusal(staff_page_url=wrong)
