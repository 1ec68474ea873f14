"""The contract suite covers every Store method: a new protocol method without a contract
test (``tests.store.contract.covers``) fails here."""

from __future__ import annotations

import importlib
import pkgutil

import tests.store
from tests.store.contract import COVERAGE, protocol_methods


def _load_contract_tests() -> None:
    for module in pkgutil.iter_modules(tests.store.__path__):
        if module.name.startswith("test_"):
            importlib.import_module(f"tests.store.{module.name}")


def test_every_store_method_has_a_contract_test() -> None:
    _load_contract_tests()
    missing = protocol_methods() - set(COVERAGE)
    assert not missing, f"Store methods without a contract test: {sorted(missing)}"


def test_contract_tests_claim_only_store_methods() -> None:
    _load_contract_tests()
    unknown = set(COVERAGE) - protocol_methods()
    assert not unknown, f"@covers names that are not Store methods: {sorted(unknown)}"


def test_the_protocol_is_read_in_full() -> None:
    """The registry compares against the protocol's real method list, not an empty one."""
    assert {"create_account", "finish_task", "stats", "meta_set"} <= protocol_methods()
    assert len(protocol_methods()) >= 40
