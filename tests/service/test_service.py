"""The Service called directly with typed requests (no server): validation order (spec §5),
money (spec §3), and getTaskResult of unknown, foreign and expired ids (spec §2, §4)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from capd.domain.money import task_price_units
from capd.service import (
    BalanceRequest,
    CreateTaskRequest,
    ReportKind,
    ReportRequest,
    ResultState,
    TaskResultRequest,
)
from capd.store.base import Store
from tests.helpers import CHROME_UA, SITEKEY, FakeClock, b64, captcha_png, image_task
from tests.service.kit import PUBLIC_IP, World, refused_code, run, world

OLD_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/90.0 Safari/537.36"
IMAGE_PRICE = task_price_units(Decimal("0.3"))


@pytest.fixture
def w(store: Store, clock: FakeClock, tmp_path: Path) -> World:
    built = world(store, clock, tmp_path)
    built.dispatcher.attach("ImageToTextTask")  # a built-in solver serves images
    return built


def recaptcha(**fields: Any) -> dict[str, Any]:
    return {"type": "RecaptchaV2TaskProxyless", "websiteURL": "https://example.com/",
            "websiteKey": SITEKEY, **fields}


def create(w: World, key: str | None, task: dict[str, Any], callback: object = None,
           ip: str = PUBLIC_IP) -> int:
    return run(w.service.create_task(CreateTaskRequest(key, ip, task, callback))).task_id


def create_code(w: World, key: str | None, task: dict[str, Any], callback: object = None
                ) -> str:
    return refused_code(w.service.create_task(CreateTaskRequest(key, PUBLIC_IP, task,
                                                                callback)))


# -- validation order (spec §5) ------------------------------------------------------------------
def test_key_is_checked_before_the_task_type(w: World) -> None:
    assert create_code(w, "0" * 32, {"type": "Nope"}) == "ERROR_KEY_DOES_NOT_EXIST"


def test_malformed_key_is_unknown(w: World) -> None:
    assert create_code(w, None, image_task()) == "ERROR_KEY_DOES_NOT_EXIST"


def test_unknown_type_before_fields(w: World) -> None:
    assert create_code(w, w.account(), {"type": "Nope", "websiteURL": 1}) == (
        "ERROR_TASK_NOT_SUPPORTED")


def test_missing_field_before_website_url(w: World) -> None:
    task = {"type": "RecaptchaV2TaskProxyless", "websiteURL": "ftp://x"}
    assert create_code(w, w.account(), task) == "ERROR_BAD_PARAMETERS"


def test_website_url_before_proxy(w: World) -> None:
    task = {"type": "NoCaptchaTask", "websiteURL": "nope", "websiteKey": SITEKEY}
    assert create_code(w, w.account(), task) == "ERROR_RECAPTCHA_INVALID_DOMAIN"


def test_sitekey_before_proxy(w: World) -> None:
    task = {"type": "NoCaptchaTask", "websiteURL": "https://a.org/", "websiteKey": "short"}
    assert create_code(w, w.account(), task) == "ERROR_RECAPTCHA_INVALID_SITEKEY"


def test_incomplete_proxy_is_missing(w: World) -> None:
    task = recaptcha(type="NoCaptchaTask", proxyType="http", proxyAddress="93.184.216.34")
    assert create_code(w, w.account(), task) == "ERROR_PROXY_MISSING"


def test_internal_proxy_before_user_agent(w: World) -> None:
    task = recaptcha(proxyType="http", proxyAddress="10.0.0.1", proxyPort=8080,
                     userAgent=OLD_UA)
    assert create_code(w, w.account(), task) == "ERROR_PROXY_CONNECT_REFUSED"
    assert w.proxy_guard.asked == ["10.0.0.1"]


def test_banned_proxy_before_user_agent_and_counts_as_violation(w: World) -> None:
    run(w.store.ban_proxy("93.184.216.34", 8080, w.clock() + 60))
    task = recaptcha(proxyType="http", proxyAddress="93.184.216.34", proxyPort=8080,
                     userAgent=OLD_UA)
    key = w.account()
    assert create_code(w, key, task) == "ERROR_PROXY_BANNED"
    count = run(w.store.incr_counter(f"violation:{w.account_id(key)}:{PUBLIC_IP}", 60,
                                     w.clock()))
    assert count == 2  # the banned proxy's violation, then this probe


def test_user_agent_before_callback(w: World) -> None:
    task = recaptcha(userAgent=OLD_UA)
    assert create_code(w, w.account(), task, "http://internal.test/cb") == (
        "ERROR_WRONG_USERAGENT")


def test_callback_to_internal_host_before_image_size(w: World) -> None:
    task = {"type": "ImageToTextTask", "body": ""}
    assert create_code(w, w.account(), task, "http://internal.test/cb") == (
        "ERROR_BAD_PARAMETERS")
    assert w.callback_guard.asked == ["internal.test"]


def test_callback_that_is_not_a_url_is_a_bad_parameter(w: World) -> None:
    assert create_code(w, w.account(), image_task(), 42) == "ERROR_BAD_PARAMETERS"
    assert w.callback_guard.asked == []


def test_image_size_before_balance(w: World) -> None:
    task = {"type": "ImageToTextTask", "body": b64(b"x" * 10)}
    assert create_code(w, w.account("0"), task) == "ERROR_ZERO_CAPTCHA_FILESIZE"


def test_blocked_domain_before_balance(w: World) -> None:
    run(w.store.blocklist_add("example.com", w.clock()))
    assert create_code(w, w.account("0"), recaptcha()) == "ERROR_DOMAIN_NOT_ALLOWED"


def test_balance_before_capacity(w: World) -> None:
    assert create_code(w, w.account("0"), recaptcha()) == "ERROR_ZERO_BALANCE"
    assert create_code(w, w.account(), recaptcha()) == "ERROR_NO_SLOT_AVAILABLE"


def test_proxy_is_never_asked_about_when_the_task_has_none(w: World) -> None:
    create(w, w.account(), image_task())
    assert w.proxy_guard.asked == []


# -- money (spec §3) -------------------------------------------------------------------------------
def test_create_reserves_the_price_without_charging(w: World) -> None:
    key = w.account("1")
    balance, _ = w.money(key)
    create(w, key, image_task())
    assert w.money(key) == (balance, IMAGE_PRICE)


def test_failed_task_releases_the_reservation_uncharged(w: World) -> None:
    key = w.account("1")
    balance, _ = w.money(key)
    task_id = create(w, key, image_task())
    run(w.service.finish_task(task_id, error_code="ERROR_CAPTCHA_UNSOLVABLE"))
    assert w.money(key) == (balance, 0)
    result = run(w.service.get_task_result(TaskResultRequest(key, PUBLIC_IP, task_id)))
    assert (result.state, result.error_code, result.cost) == (
        ResultState.FAILED, "ERROR_CAPTCHA_UNSOLVABLE", Decimal(0))


def test_solved_task_is_charged_its_price(w: World) -> None:
    key = w.account("1")
    balance, _ = w.money(key)
    task_id = create(w, key, image_task())
    run(w.service.finish_task(task_id, solution={"text": "abc"}))
    assert w.money(key) == (balance - IMAGE_PRICE, 0)
    result = run(w.service.get_task_result(TaskResultRequest(key, PUBLIC_IP, task_id)))
    assert (result.state, result.solution, result.cost, result.ip) == (
        ResultState.READY, {"text": "abc"}, Decimal("0.0003"), PUBLIC_IP)


def test_balance_is_less_what_is_reserved(w: World) -> None:
    key = w.account("1")
    create(w, key, image_task())
    balance = run(w.service.get_balance(BalanceRequest(key, PUBLIC_IP)))
    assert balance.amount == Decimal("1") - Decimal("0.0003")


def test_price_above_available_balance_is_zero_balance(w: World) -> None:
    key = w.account("0.0003")
    create(w, key, image_task())
    assert create_code(w, key, image_task()) == "ERROR_ZERO_BALANCE"


# -- getTaskResult (spec §2, §4) -----------------------------------------------------------------
def test_open_task_is_processing(w: World) -> None:
    key = w.account()
    task_id = create(w, key, image_task())
    result = run(w.service.get_task_result(TaskResultRequest(key, PUBLIC_IP, task_id)))
    assert result.state == ResultState.PROCESSING


@pytest.mark.parametrize("task_id", [None, 999, 2**62])
def test_unknown_task_id_is_no_such_captcha(w: World, task_id: int | None) -> None:
    assert refused_code(w.service.get_task_result(
        TaskResultRequest(w.account(), PUBLIC_IP, task_id))) == "ERROR_NO_SUCH_CAPCHA_ID"


def test_another_accounts_task_is_no_such_captcha(w: World) -> None:
    task_id = create(w, w.account(), image_task())
    assert refused_code(w.service.get_task_result(
        TaskResultRequest(w.account(), PUBLIC_IP, task_id))) == "ERROR_NO_SUCH_CAPCHA_ID"


def test_result_expires_after_its_ttl(w: World) -> None:
    key = w.account()
    task_id = create(w, key, image_task())
    run(w.service.finish_task(task_id, solution={"text": "abc"}))
    w.clock.advance(w.settings.result_ttl_s + 1)
    assert refused_code(w.service.get_task_result(
        TaskResultRequest(key, PUBLIC_IP, task_id))) == "ERROR_NO_SUCH_CAPCHA_ID"


def test_overdue_token_task_fails_with_recaptcha_timeout(w: World) -> None:
    key = w.account()
    run(w.store.note_workers(["RecaptchaV2TaskProxyless"], w.clock()))
    task_id = create(w, key, recaptcha())
    w.clock.advance(w.settings.worker_deadline_s + 1)
    assert run(w.service.expire_overdue()) == 1
    result = run(w.service.get_task_result(TaskResultRequest(key, PUBLIC_IP, task_id)))
    assert result.error_code == "ERROR_RECAPTCHA_TIMEOUT"


# -- reports (spec §3, §9) --------------------------------------------------------------------
def _solved_image(w: World, key: str) -> int:
    task_id = create(w, key, {"type": "ImageToTextTask", "body": b64(captcha_png("ab"))})
    run(w.service.finish_task(task_id, solution={"text": "ab"}))
    return task_id


def test_image_report_refunds_once(w: World) -> None:
    key = w.account("1")
    balance, _ = w.money(key)
    task_id = _solved_image(w, key)
    run(w.service.report(ReportRequest(key, PUBLIC_IP, task_id, ReportKind.IMAGE)))
    assert w.money(key) == (balance, 0)
    assert refused_code(w.service.report(
        ReportRequest(key, PUBLIC_IP, task_id, ReportKind.IMAGE))) == "ERROR_NO_SUCH_CAPCHA_ID"


def test_token_report_of_an_image_task_is_refused(w: World) -> None:
    key = w.account("1")
    task_id = _solved_image(w, key)
    assert refused_code(w.service.report(
        ReportRequest(key, PUBLIC_IP, task_id, ReportKind.TOKEN))) == "ERROR_NO_SUCH_CAPCHA_ID"


def test_good_report_changes_nothing(w: World) -> None:
    key = w.account("1")
    task_id = _solved_image(w, key)
    before = w.money(key)
    run(w.service.report(ReportRequest(key, PUBLIC_IP, task_id, ReportKind.GOOD)))
    assert w.money(key) == before


def test_user_agent_of_a_current_browser_is_accepted(w: World) -> None:
    run(w.store.note_workers(["RecaptchaV2TaskProxyless"], w.clock()))
    assert create(w, w.account(), recaptcha(userAgent=CHROME_UA)) > 0


def test_final_result_is_one_object_across_polls(w: World) -> None:
    key = w.account()
    task_id = create(w, key, image_task())
    first = run(w.service.get_task_result(TaskResultRequest(key, PUBLIC_IP, task_id)))
    run(w.service.finish_task(task_id, solution={"text": "abc"}))
    ready = [run(w.service.get_task_result(TaskResultRequest(key, PUBLIC_IP, task_id)))
             for _ in range(2)]
    assert first.state == ResultState.PROCESSING
    assert ready[0] is ready[1] and ready[0].task_id == task_id
