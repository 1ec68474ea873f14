"""``python-anticaptcha`` (the community anti-captcha client) against a live capd.

Pointed at capd through its own options: ``AnticaptchaClient(host=..., use_ssl=False)``
(python_anticaptcha/sync_client.py builds ``{proto}://{host}/`` from them). Polling:
``Job.join(backoff=True)``, the library's documented option, starts at 1 s instead of
its default fixed 3 s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from python_anticaptcha import (
    AnticaptchaClient,
    AnticaptchaException,
    AntiGateTaskProxyless,
    ImageToTextTask,
    NoCaptchaTaskProxylessTask,
)

from tests.compat.images import HUGE, PNG, TEXT, TINY
from tests.helpers import SITEKEY, LiveServer

Connect = Callable[[str], AnticaptchaClient]


@pytest.fixture
def connect(server: LiveServer) -> Iterator[Connect]:
    clients: list[AnticaptchaClient] = []
    host = server.url.removeprefix("http://")

    def make(key: str) -> AnticaptchaClient:
        client = AnticaptchaClient(key, host=host, use_ssl=False)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def refused(client: AnticaptchaClient, task: object) -> str:
    with pytest.raises(AnticaptchaException) as caught:
        client.create_task(task)
    assert caught.value.error_id == 1
    return str(caught.value.error_code)


def test_balance(server: LiveServer, connect: Connect) -> None:
    assert connect(server.new_account("7.125")).get_balance() == 7.125


def test_image_to_text_solve(connect: Connect, key: str) -> None:
    job = connect(key).create_task(ImageToTextTask(PNG))
    job.join(maximum_time=20, backoff=True)
    assert job.get_captcha_text() == TEXT


def test_case_false_answers_lower_case(connect: Connect, key: str) -> None:
    job = connect(key).create_task(ImageToTextTask(PNG, case=False))
    job.join(maximum_time=20, backoff=True)
    assert job.get_captcha_text() == TEXT.lower()


def test_report_incorrect_image(connect: Connect, key: str) -> None:
    client = connect(key)
    job = client.create_task(ImageToTextTask(PNG))
    job.join(maximum_time=20, backoff=True)
    assert job.report_incorrect_image() is True
    assert client.get_balance() == 10.0


def test_bad_key(connect: Connect) -> None:
    with pytest.raises(AnticaptchaException) as caught:
        connect("0" * 32).get_balance()
    assert caught.value.error_code == "ERROR_KEY_DOES_NOT_EXIST"


def test_zero_balance(server: LiveServer, connect: Connect) -> None:
    assert refused(connect(server.new_account("0")), ImageToTextTask(PNG)) == \
        "ERROR_ZERO_BALANCE"


def test_unknown_task_id(connect: Connect, key: str) -> None:
    with pytest.raises(AnticaptchaException) as caught:
        connect(key).get_task_result(12345678)
    assert caught.value.error_code == "ERROR_NO_SUCH_CAPCHA_ID"


def test_image_too_small(connect: Connect, key: str) -> None:
    assert refused(connect(key), ImageToTextTask(TINY)) == "ERROR_ZERO_CAPTCHA_FILESIZE"


def test_image_too_big(connect: Connect, key: str) -> None:
    assert refused(connect(key), ImageToTextTask(HUGE)) == "ERROR_TOO_BIG_CAPTCHA_FILESIZE"


def test_unsupported_type(connect: Connect, key: str) -> None:
    task = AntiGateTaskProxyless("https://example.com/", "Sign up", {"email": "a@b.c"})
    assert refused(connect(key), task) == "ERROR_TASK_NOT_SUPPORTED"


def test_token_type_without_a_worker(connect: Connect, key: str) -> None:
    task = NoCaptchaTaskProxylessTask("https://example.com/", SITEKEY)
    assert refused(connect(key), task) == "ERROR_NO_SLOT_AVAILABLE"
