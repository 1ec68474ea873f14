"""The hardening battery (issue 7): bounded example budgets by default, long runs on demand.

``CAPD_LONG_FUZZ=1`` multiplies every hypothesis and schemathesis budget in this folder.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

LONG = os.environ.get("CAPD_LONG_FUZZ", "") == "1"


def budget(examples: int) -> int:
    """The example budget of a property: ``examples`` normally, 20x under CAPD_LONG_FUZZ."""
    return examples * 20 if LONG else examples


settings.register_profile(
    "capd-hardening", deadline=None, derandomize=not LONG, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                           HealthCheck.data_too_large, HealthCheck.filter_too_much])
