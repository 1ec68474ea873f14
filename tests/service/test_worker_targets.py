"""Issue 13, finding 4: URLs capd hands to workers (websiteURL, imageUrls, apiJsUrl) are
held to the address guard's rule unless the operator allows private targets."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from capd.errors import CapdError
from capd.outbound.guard import TargetGuard
from capd.service import CreateTaskRequest
from capd.store.base import Store
from tests.helpers import SITEKEY, FakeClock
from tests.service.kit import PUBLIC_IP, World, run, world

RECAPTCHA = "RecaptchaV2TaskProxyless"
COMPLEX = "ComplexImageTask"
TURNSTILE = "TurnstileTaskProxyless"


def make(store: Store, clock: FakeClock, tmp_path: Path, **overrides: Any) -> World:
    built = world(store, clock, tmp_path, **overrides)
    run(built.store.note_workers([RECAPTCHA, COMPLEX, TURNSTILE], clock()))
    return built


@pytest.fixture
def w(store: Store, clock: FakeClock, tmp_path: Path) -> World:
    return make(store, clock, tmp_path)


def refusal(w: World, body: dict[str, Any]) -> CapdError:
    with pytest.raises(CapdError) as caught:
        run(w.service.create_task(CreateTaskRequest(w.account(), PUBLIC_IP, body)))
    return caught.value


def recaptcha(url: str) -> dict[str, Any]:
    return {"type": RECAPTCHA, "websiteURL": url, "websiteKey": SITEKEY}


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/",
                                 "http://127.0.0.1:8080/", "http://127.1/", "http://[::1]/",
                                 "http://10.1.2.3/", "http://0x7f.1/"])
def test_website_url_on_an_internal_address_is_a_bad_parameter(w: World, url: str) -> None:
    error = refusal(w, recaptcha(url))
    assert error.code == "ERROR_BAD_PARAMETERS" and "'websiteURL'" in error.description


def test_image_url_on_an_internal_address_is_a_bad_parameter(w: World) -> None:
    body = {"type": COMPLEX, "class": "recaptcha",
            "imageUrls": ["https://8.8.8.8/a.png", "http://169.254.169.254/b.png"]}
    error = refusal(w, body)
    assert error.code == "ERROR_BAD_PARAMETERS" and "'imageUrls[1]'" in error.description


def test_api_js_url_on_an_internal_address_is_a_bad_parameter(w: World) -> None:
    body = {"type": TURNSTILE, "websiteURL": "https://example.com/", "websiteKey": "0x4AAA",
            "apiJsUrl": "http://127.0.0.1/api.js"}
    assert refusal(w, body).code == "ERROR_BAD_PARAMETERS"


def test_operator_may_allow_private_targets(store: Store, clock: FakeClock,
                                            tmp_path: Path) -> None:
    w = make(store, clock, tmp_path, allow_private_targets=True)
    task_id = run(w.service.create_task(CreateTaskRequest(
        w.account(), PUBLIC_IP, recaptcha("http://127.0.0.1:8080/"))))
    assert task_id.task_id > 0


def resolver(table: dict[str, list[str]]) -> Any:
    async def resolve(host: str) -> list[str]:
        if host not in table:
            raise OSError("no such name")
        return table[host]
    return resolve


def test_target_name_resolving_to_an_internal_address_is_refused() -> None:
    guard = TargetGuard(resolver=resolver({"metadata.test": ["169.254.169.254"],
                                           "public.test": ["8.8.8.8"]}))
    assert asyncio.run(guard.allows("metadata.test")) is False
    assert asyncio.run(guard.allows("public.test")) is True


def test_target_name_that_does_not_resolve_is_let_through() -> None:
    assert asyncio.run(TargetGuard(resolver=resolver({})).allows("nowhere.test")) is True


@pytest.mark.parametrize("host", ["metadata", "metadata.google.internal", "printer.local",
                                  "router.home.arpa", "db.localhost", "METADATA.INTERNAL."])
def test_target_name_only_a_local_network_can_resolve_is_refused(host: str) -> None:
    """Unresolvable here is no proof it names nothing: a worker's own resolver answers
    single labels (search domains) and local-use suffixes with internal addresses."""
    assert asyncio.run(TargetGuard(resolver=resolver({})).allows(host)) is False


def test_websiteurl_on_a_local_only_name_is_a_bad_parameter(w: World) -> None:
    assert refusal(w, recaptcha("http://metadata.google.internal/")).code == \
        "ERROR_BAD_PARAMETERS"
