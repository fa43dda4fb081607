"""covers(): the test that lets a reconcile with nothing to change write nothing."""

from __future__ import annotations

from sluice.reconcile.apply import covers


def test_defaulted_fields_on_live_do_not_count() -> None:
    desired = {"spec": {"ports": [{"name": "http", "port": 8000}]}}
    live = {
        "spec": {
            "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
            "clusterIP": "10.0.0.1",
        }
    }
    assert covers(live, desired)


def test_changed_value_is_seen() -> None:
    assert not covers({"spec": {"replicas": 3}}, {"spec": {"replicas": 2}})
    assert not covers({"metadata": {"labels": {"a": "x"}}}, {"metadata": {"labels": {"a": "y"}}})


def test_missing_field_is_seen() -> None:
    assert not covers({"metadata": {"labels": {}}}, {"metadata": {"labels": {"a": "x"}}})


def test_scalar_lists_must_be_equal() -> None:
    assert not covers({"args": ["a", "b", "extra"]}, {"args": ["a", "b"]})
    assert covers({"args": ["a", "b"]}, {"args": ["a", "b"]})


def test_object_lists_match_elementwise() -> None:
    assert not covers({"c": [{"n": 1}]}, {"c": [{"n": 1}, {"n": 2}]})
    assert not covers({"c": [{"n": 2}, {"n": 1}]}, {"c": [{"n": 1}, {"n": 2}]})


def test_types_matter_but_numbers_compare_by_value() -> None:
    assert not covers({"v": "1"}, {"v": 1})
    assert covers({"v": 1.0}, {"v": 1})
    assert not covers({"v": True}, {"v": 1})


def test_difference_names_the_first_field_live_does_not_hold() -> None:
    from sluice.reconcile.apply import difference

    desired = {"spec": {"replicas": 2, "template": {"args": ["a", "b"]}}}
    assert (
        difference({"spec": {"replicas": 2, "template": {"args": ["a", "b"]}, "x": 1}}, desired)
        is None
    )
    assert (
        difference({"spec": {"replicas": 1, "template": {"args": ["a", "b"]}}}, desired)
        == "spec.replicas"
    )
    assert (
        difference({"spec": {"replicas": 2, "template": {"args": ["a"]}}}, desired)
        == "spec.template.args"
    )
    assert difference({"spec": {"replicas": 2}}, desired) == "spec.template"
