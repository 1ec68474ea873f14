"""anti-captcha's official Python library (``anticaptchaofficial``) against a live capd.

The library has no base-URL option: ``antiNetworking.make_request`` posts to the literal
``"https://api.anti-captcha.com/" + method`` through the module-level
``requests.Session`` in ``anticaptchaofficial/antinetworking.py`` (``session``, which the
library itself mounts adapters on in ``set_poolSize``). The narrowest override is a
requests transport adapter mounted on that session for exactly that prefix, which
re-addresses each prepared request to capd and changes nothing else: method, path,
headers and body are the library's own bytes. Its polling is left as it is (a fixed 1 s
sleep before each getTaskResult, ``wait_for_result``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from anticaptchaofficial import antinetworking
from anticaptchaofficial.imagecaptcha import imagecaptcha
from anticaptchaofficial.imagetocoordinates import imagetocoordinates
from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter

from tests.compat.images import HUGE, PNG, TEXT, TINY
from tests.helpers import LiveServer

ANTICAPTCHA = "https://api.anti-captcha.com/"


class ToCapd(HTTPAdapter):
    """Sends what is addressed to ``ANTICAPTCHA`` to capd instead, unchanged otherwise."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url

    def send(self, request: PreparedRequest, *args: Any, **kwargs: Any) -> Response:
        assert request.url is not None and request.url.startswith(ANTICAPTCHA)
        request.url = self.base_url + request.url[len(ANTICAPTCHA):]
        return super().send(request, *args, **kwargs)


@pytest.fixture(autouse=True)
def to_capd(server: LiveServer) -> Iterator[None]:
    antinetworking.session.mount(ANTICAPTCHA, ToCapd(server.url + "/"))
    yield
    antinetworking.session.adapters.pop(ANTICAPTCHA).close()


def solver(key: str, **options: Any) -> imagecaptcha:
    solver = imagecaptcha()
    solver.set_key(key)
    for name, value in options.items():
        getattr(solver, f"set_{name}")(value)
    return solver


def test_balance(server: LiveServer) -> None:
    checker = imagecaptcha()
    checker.set_key(server.new_account("3.25"))
    assert checker.get_balance() == 3.25


def test_image_to_text_solve_case_sensitive(server: LiveServer, key: str) -> None:
    assert solver(key, case=True).solve_and_return_solution(None, body=PNG) == TEXT


def test_image_to_text_solve_default_is_case_insensitive(server: LiveServer, key: str) -> None:
    # the library always sends "case": false unless set_case(True) (imagecaptcha.py)
    assert solver(key).solve_and_return_solution(None, body=PNG) == TEXT.lower()


def test_image_from_a_file(server: LiveServer, key: str, png_file: Any) -> None:
    assert solver(key, case=True).solve_and_return_solution(png_file(PNG)) == TEXT


def test_report_incorrect_image(server: LiveServer, key: str) -> None:
    captcha = solver(key)
    assert captcha.solve_and_return_solution(None, body=PNG)
    assert captcha.report_incorrect_image_captcha() == {"errorId": 0, "status": "success"}
    assert captcha.get_balance() == 10.0


def test_bad_key(server: LiveServer) -> None:
    captcha = solver("0" * 32)
    assert captcha.solve_and_return_solution(None, body=PNG) == 0
    assert captcha.error_code == "ERROR_KEY_DOES_NOT_EXIST"


def test_bad_key_on_balance_fails_inside_the_library(server: LiveServer) -> None:
    # get_balance reads result["balance"] whatever errorId says (antinetworking.py), so a
    # bad key ends in KeyError here exactly as against api.anti-captcha.com.
    checker = imagecaptcha()
    checker.set_key("0" * 32)
    with pytest.raises(KeyError, match="balance"):
        checker.get_balance()


def test_zero_balance(server: LiveServer) -> None:
    captcha = solver(server.new_account("0"))
    assert captcha.solve_and_return_solution(None, body=PNG) == 0
    assert captcha.error_code == "ERROR_ZERO_BALANCE"


def test_unknown_task_id(server: LiveServer, key: str) -> None:
    captcha = solver(key)
    captcha.task_id = 12345678
    assert captcha.wait_for_result(5) == 0
    assert captcha.error_code == "ERROR_NO_SUCH_CAPCHA_ID"


def test_image_too_small(server: LiveServer, key: str) -> None:
    captcha = solver(key)
    assert captcha.solve_and_return_solution(None, body=TINY) == 0
    assert captcha.error_code == "ERROR_ZERO_CAPTCHA_FILESIZE"


def test_image_too_big(server: LiveServer, key: str) -> None:
    captcha = solver(key)
    assert captcha.solve_and_return_solution(None, body=HUGE) == 0
    assert captcha.error_code == "ERROR_TOO_BIG_CAPTCHA_FILESIZE"


def test_unsupported_type(server: LiveServer, key: str) -> None:
    # the library's ImageToCoordinatesTask, a type capd does not serve
    captcha = imagetocoordinates()
    captcha.set_key(key)
    assert captcha.solve_and_return_solution(None, body=PNG) == 0
    assert captcha.error_code == "ERROR_TASK_NOT_SUPPORTED"
