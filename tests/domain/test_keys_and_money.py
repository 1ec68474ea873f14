from __future__ import annotations

from decimal import Decimal

import pytest

from capd.domain.keys import new_key, parse_client_key
from capd.domain.money import format_cost, from_units, task_price_units, to_units

KEY = "0123456789abcdef0123456789abcdef"


def test_new_keys_are_32_lowercase_hex_and_distinct() -> None:
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(len(k) == 32 and k == k.lower() and int(k, 16) >= 0 for k in keys)


@pytest.mark.parametrize(("raw", "module", "threshold", "nocache"), [
    (KEY, None, None, False),
    (f"{KEY}__solvemedia", "solvemedia", None, False),
    (f"{KEY}__recognizingthreshold_70__solvemedia", "solvemedia", 70, False),
    (f"{KEY}__nocache__recognizingThreshold_0", None, 0, True),
    (f"{KEY}__recognizingthreshold_100__nocache__captcha_math", "captcha_math", 100, True),
])
def test_key_options_in_any_order(raw: str, module: str | None, threshold: int | None,
                                  nocache: bool) -> None:
    opts = parse_client_key(raw)
    assert opts is not None and opts.key == KEY
    assert (opts.module, opts.recognizing_threshold, opts.nocache) == (module, threshold, nocache)


@pytest.mark.parametrize("raw", [KEY.upper(), KEY[:-1], KEY + "0", f"{KEY}__recognizingthreshold_101",
                                 f"{KEY}__recognizingthreshold_x", f"{KEY}__bad module", None, 5,
                                 f"__{KEY}", ""])
def test_malformed_keys(raw: object) -> None:
    assert parse_client_key(raw) is None


def test_prices_are_exact() -> None:
    assert task_price_units(Decimal("0.3")) == 30_000
    assert format_cost(30_000) == "0.00030"
    assert format_cost(task_price_units(Decimal("1.23456"))) == "0.00123456"
    assert from_units(to_units(Decimal("345.678"))) == Decimal("345.678")
    assert sum([to_units(Decimal("0.1"))] * 10) == to_units(Decimal("1"))
    with pytest.raises(ValueError):
        to_units(Decimal("0.000000001"))
