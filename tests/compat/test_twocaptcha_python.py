"""2captcha's official Python library (``2captcha-python``) against capd's /in.php and /res.php.

Pointed at capd through its own option: ``TwoCaptcha(server=...)`` ("API server",
documented for rucaptcha.com). The library always builds ``'https://' + server +
'/in.php'`` (twocaptcha/api.py, ``ApiClient.in_`` and ``res``), so capd is served over TLS
here (``tls_server``, certificate in ``certs/``) and requests is told to trust the test CA
through its standard ``REQUESTS_CA_BUNDLE`` variable: the library itself is untouched.

Polling: ``pollingInterval=1``. The library truncates it to an integer before sleeping
(solver.py, ``solve``: ``int(polling_interval or self.polling_interval)``), so anything
under 1 s becomes ``sleep(0)`` — a busy loop that capd's poll-rate limit would refuse.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from twocaptcha import TwoCaptcha
from twocaptcha.exceptions.api import ApiException

from tests.compat.conftest import TlsLiveServer
from tests.compat.images import BLANK, HUGE, PNG, TEXT, TINY
from tests.helpers import SITEKEY, b64, captcha_png

pytestmark = pytest.mark.usefixtures("trust_test_ca")
PngFile = Callable[[bytes], str]


def solver(server: TlsLiveServer, key: str, **options: Any) -> TwoCaptcha:
    return TwoCaptcha(key, server=f"127.0.0.1:{server.port}", pollingInterval=1,
                      defaultTimeout=20, **options)


@pytest.fixture
def key(tls_server: TlsLiveServer) -> str:
    return tls_server.new_account("10")


def refused(call: Callable[[], Any]) -> str:
    """The error text the library raises (ApiClient raises on any answer with ERROR)."""
    with pytest.raises(ApiException) as caught:
        call()
    return str(caught.value)


def test_balance(tls_server: TlsLiveServer) -> None:
    assert solver(tls_server, tls_server.new_account("4.75")).balance() == 4.75


def test_normal_from_a_file_is_case_insensitive_by_default(
        tls_server: TlsLiveServer, key: str, png_file: PngFile) -> None:
    result = solver(tls_server, key).normal(png_file(PNG))  # method=post, multipart
    assert result["code"] == TEXT.lower() and result["captchaId"].isdigit()


def test_normal_case_sensitive(tls_server: TlsLiveServer, key: str, png_file: PngFile) -> None:
    assert solver(tls_server, key).normal(png_file(PNG), caseSensitive=1)["code"] == TEXT


def test_normal_from_base64(tls_server: TlsLiveServer, key: str) -> None:
    assert solver(tls_server, key).normal(b64(PNG), caseSensitive=1)["code"] == TEXT


def test_normal_calc(tls_server: TlsLiveServer, key: str, png_file: PngFile) -> None:
    assert solver(tls_server, key).normal(png_file(captcha_png("7+3=")), calc=1)["code"] == "10"


def test_json_answers_with_extended_response(tls_server: TlsLiveServer, key: str,
                                             png_file: PngFile) -> None:
    # extendedResponse polls res.php with json=1 and reads {"status": 1, "request": …}
    result = solver(tls_server, key, extendedResponse=True).normal(png_file(PNG),
                                                                   caseSensitive=1)
    assert result["code"] == TEXT and set(result) == {"captchaId", "code"}


def test_report_bad_refunds(tls_server: TlsLiveServer, key: str, png_file: PngFile) -> None:
    client = solver(tls_server, key)
    captcha_id = client.normal(png_file(PNG))["captchaId"]
    assert client.balance() == 9.9997
    assert client.report(captcha_id, False) == "OK_REPORT_RECORDED"
    assert client.balance() == 10.0


def test_report_good(tls_server: TlsLiveServer, key: str, png_file: PngFile) -> None:
    client = solver(tls_server, key)
    captcha_id = client.normal(png_file(PNG))["captchaId"]
    assert client.report(captcha_id, True) == "OK_REPORT_RECORDED"


def test_bad_key(tls_server: TlsLiveServer) -> None:
    assert refused(solver(tls_server, "0" * 32).balance) == "ERROR_KEY_DOES_NOT_EXIST"


def test_malformed_key(tls_server: TlsLiveServer, png_file: PngFile) -> None:
    path = png_file(PNG)
    assert refused(lambda: solver(tls_server, "not-a-key").normal(path)) == \
        "ERROR_WRONG_USER_KEY"


def test_zero_balance(tls_server: TlsLiveServer, png_file: PngFile) -> None:
    client, path = solver(tls_server, tls_server.new_account("0")), png_file(PNG)
    assert refused(lambda: client.normal(path)) == "ERROR_ZERO_BALANCE"


def test_unknown_captcha_id(tls_server: TlsLiveServer, key: str) -> None:
    assert refused(lambda: solver(tls_server, key).get_result("12345678")) == \
        "ERROR_WRONG_CAPTCHA_ID"


def test_image_too_small(tls_server: TlsLiveServer, key: str, png_file: PngFile) -> None:
    path = png_file(TINY)
    assert refused(lambda: solver(tls_server, key).normal(path)) == \
        "ERROR_ZERO_CAPTCHA_FILESIZE"


def test_image_too_big(tls_server: TlsLiveServer, key: str, png_file: PngFile) -> None:
    path = png_file(HUGE)
    assert refused(lambda: solver(tls_server, key).normal(path)) == \
        "ERROR_TOO_BIG_CAPTCHA_FILESIZE"


def test_unsolvable_image(tls_server: TlsLiveServer, key: str, png_file: PngFile) -> None:
    path = png_file(BLANK)
    assert refused(lambda: solver(tls_server, key).normal(path)) == "ERROR_CAPTCHA_UNSOLVABLE"


def test_unsupported_method(tls_server: TlsLiveServer, key: str) -> None:
    # audio captchas (method=audio) are not served by capd
    body = b64(b"ID3" + b"\x00" * 200)
    assert refused(lambda: solver(tls_server, key).audio(body, lang="en")) == \
        "ERROR_NO_SUCH_METHOD"


def test_token_method_without_a_worker(tls_server: TlsLiveServer, key: str) -> None:
    client = solver(tls_server, key)
    assert refused(lambda: client.recaptcha(SITEKEY, "https://example.com/")) == \
        "ERROR_NO_SLOT_AVAILABLE"
