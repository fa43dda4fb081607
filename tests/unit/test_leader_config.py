"""Leader-election settings from the environment the chart sets."""

from __future__ import annotations

import pytest

from sluice.leader import DEFAULT_LEASE_NAME, LeaseConfig, _micro_time


def test_from_the_charts_environment() -> None:
    c = LeaseConfig.from_env(
        {
            "POD_NAME": "sluice-7d9f-abcde",
            "POD_NAMESPACE": "ops",
            "SLUICE_LEASE_NAMESPACE": "sluice-system",
            "SLUICE_LEASE_NAME": "sluice-leader",
            "SLUICE_LEASE_DURATION": "20",
            "SLUICE_RENEW_DEADLINE": "12",
            "SLUICE_RETRY_PERIOD": "3",
        }
    )
    assert c == LeaseConfig("sluice-system", "sluice-leader", "sluice-7d9f-abcde", 20, 12, 3)


def test_local_defaults_give_each_process_its_own_identity() -> None:
    a, b = LeaseConfig.from_env({"POD_NAMESPACE": "ops"}), LeaseConfig.from_env({})
    assert a.namespace == "ops" and a.name == DEFAULT_LEASE_NAME
    assert a.identity and a.identity != b.identity
    assert (a.lease_duration, a.renew_deadline, a.retry_period) == (15, 10, 2)


@pytest.mark.parametrize(
    ("lease", "renew", "retry"),
    [(10, 10, 2), (10, 12, 2), (15, 10, 10), (15, 10, 0)],
)
def test_a_leader_must_give_up_before_its_lease_can_expire(
    lease: float, renew: float, retry: float
) -> None:
    with pytest.raises(ValueError, match="retry_period < renew_deadline < lease_duration"):
        LeaseConfig("ns", "l", "me", lease, renew, retry)


def test_empty_identity_is_refused() -> None:
    with pytest.raises(ValueError, match="identity"):
        LeaseConfig("ns", "l", "")


def test_micro_time_always_has_six_fractional_digits() -> None:
    import datetime as dt

    t = dt.datetime(2026, 11, 20, 10, 0, 0, tzinfo=dt.UTC)
    assert _micro_time(t) == "2026-11-20T10:00:00.000000Z"
