"""The official CapMonster Cloud SDK (``capmonstercloudclient``) against a live capd.

Pointed at capd through its own option: ``ClientOptions(service_url=...)``
(capmonstercloudclient/clientOptions.py: ``service_url`` defaults to
https://api.capmonster.cloud; every call is ``service_url + '/<method>'``). Its polling
is left untouched: ImageToText waits 0.35 s, then polls every 0.2 s for up to 10 s
(GetResultTimeouts.py, ``getImage2TextTimeouts``).
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from capmonstercloudclient import CapMonsterClient, ClientOptions
from capmonstercloudclient.exceptions import GetBalanceError, GetResultError, GetTaskError
from capmonstercloudclient.requests import ImageToTextRequest, RecaptchaV2Request

from tests.compat.images import BLANK, HUGE, PNG, TEXT, TINY
from tests.helpers import SITEKEY, GatedRecogniser, LiveServer

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def client(server: LiveServer, key: str) -> CapMonsterClient:
    return CapMonsterClient(ClientOptions(api_key=key, service_url=server.url))


def solve(server: LiveServer, key: str, request: Any) -> dict[str, Any]:
    return run(client(server, key).solve_captcha(request))


def test_balance(server: LiveServer) -> None:
    key = server.new_account("12.5")
    assert run(client(server, key).get_balance())["balance"] == 12.5


def test_image_to_text_solve(server: LiveServer, key: str) -> None:
    assert solve(server, key, ImageToTextRequest(image_bytes=PNG)) == {"text": TEXT}


def test_capitalised_fields_are_read(server: LiveServer, key: str) -> None:
    # the SDK sends ``Case`` and ``CapMonsterModule`` capitalised (ImageToTextRequest.py)
    request = ImageToTextRequest(image_bytes=PNG, case=False, module_name="universal")
    assert request.getTaskDict()["Case"] is False
    assert solve(server, key, request) == {"text": TEXT.lower()}


def test_bad_key_on_balance(server: LiveServer) -> None:
    with pytest.raises(GetBalanceError, match="ERROR_KEY_DOES_NOT_EXIST"):
        run(client(server, "0" * 32).get_balance())


def test_bad_key_on_solve(server: LiveServer) -> None:
    with pytest.raises(GetTaskError, match=r"\[ERROR_KEY_DOES_NOT_EXIST\]"):
        solve(server, "0" * 32, ImageToTextRequest(image_bytes=PNG))


def test_zero_balance(server: LiveServer) -> None:
    with pytest.raises(GetTaskError, match=r"\[ERROR_ZERO_BALANCE\]"):
        solve(server, server.new_account("0"), ImageToTextRequest(image_bytes=PNG))


def test_unknown_task_id(server: LiveServer, key: str) -> None:
    # The SDK has no public "get result by id": solve_captcha polls through this method and
    # raises GetResultError('[<errorCode>] …') from the answer it returns.
    answer = run(client(server, key)._getTaskResult(12345678))
    assert (answer["errorId"], answer["errorCode"]) == (1, "ERROR_NO_SUCH_CAPCHA_ID")


def test_image_too_small(server: LiveServer, key: str) -> None:
    with pytest.raises(GetTaskError, match=r"\[ERROR_ZERO_CAPTCHA_FILESIZE\]"):
        solve(server, key, ImageToTextRequest(image_bytes=TINY))


def test_image_too_big(server: LiveServer, key: str) -> None:
    with pytest.raises(GetTaskError, match=r"\[ERROR_TOO_BIG_CAPTCHA_FILESIZE\]"):
        solve(server, key, ImageToTextRequest(image_bytes=HUGE))


def test_unsupported_type(server: LiveServer, key: str) -> None:
    # The SDK only sends its own request classes; ``type`` is one of their public fields.
    with pytest.raises(GetTaskError, match=r"\[ERROR_TASK_NOT_SUPPORTED\]"):
        solve(server, key, ImageToTextRequest(image_bytes=PNG, type="NoSuchTask"))


def test_token_type_without_a_worker(server: LiveServer, key: str) -> None:
    request = RecaptchaV2Request(websiteUrl="https://example.com/", websiteKey=SITEKEY)
    with pytest.raises(GetTaskError, match=r"\[ERROR_NO_SLOT_AVAILABLE\]"):
        solve(server, key, request)


def test_unsolvable_image_surfaces_from_polling(server: LiveServer, key: str) -> None:
    with pytest.raises(GetResultError, match=r"\[ERROR_CAPTCHA_UNSOLVABLE\]"):
        solve(server, key, ImageToTextRequest(image_bytes=BLANK))


HELD_S = 3.0  # ~15 polls at the SDK's 0.2 s rhythm, all inside the default limits


def test_untouched_polling_fits_the_default_poll_limits(make_server: Any,
                                                        engine: Any) -> None:
    gated = GatedRecogniser(engine)
    server = make_server(recogniser=gated)  # default max_polls_per_s / max_polls_per_task
    key = server.new_account("1")
    opener = threading.Timer(HELD_S, gated.gate.set)
    opener.start()
    try:
        assert solve(server, key, ImageToTextRequest(image_bytes=PNG)) == {"text": TEXT}
    finally:
        opener.cancel()
        gated.gate.set()
    metrics = server.app.state.service.metrics.render()
    polls = re.search(r'method="getTaskResult",outcome="ok"\} (\d+)', metrics)
    assert polls is not None and int(polls.group(1)) >= 10  # it kept polling meanwhile
    assert "ERROR_TOO_MUCH_REQUESTS" not in metrics
