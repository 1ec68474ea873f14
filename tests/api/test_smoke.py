from tests.helpers import LiveServer, b64, captcha_png


def test_image_task_is_solved_and_charged(server: LiveServer, key: str) -> None:
    created = server.call("createTask", {"clientKey": key, "task": {
        "type": "ImageToTextTask", "body": b64(captcha_png("aB3k9"))}})
    assert created["errorId"] == 0 and created["taskId"] > 0
    result = server.wait_result(key, created["taskId"])
    assert result["status"] == "ready"
    assert result["solution"] == {"text": "aB3k9"}
    assert result["cost"] == "0.00030"
    balance, reserved, ledger = server.ledger_consistent(key)
    assert (balance, reserved) == (ledger, 0)
    assert server.call("getBalance", {"clientKey": key})["balance"] == 9.9997
