from __future__ import annotations

import pytest

from cohort_sync.braze.payload import Change, build_cohort_changes, count_changes


def change(kind: str, value, remove: bool = False, batch: int = 1) -> Change:
    fields = {"external_id": None, "alias_name": None, "alias_label": None, "device_id": None}
    if kind == "alias":
        fields["alias_name"], fields["alias_label"] = value
        key = f"alias:{len(value[0])}:{value[0]}:{value[1]}"
    else:
        fields[kind] = value
        key = f"{kind}:{value}"
    return Change(batch, remove, key, kind, **fields)


def test_adds_and_removes_share_one_request_removes_first():
    body = build_cohort_changes([
        change("external_id", "u1"),
        change("alias", ("lead-1", "crm")),
        change("device_id", "d1"),
        change("external_id", "gone", remove=True),
        change("device_id", "old-device", remove=True),
    ])
    assert body == [
        {"user_ids": ["gone"], "device_ids": ["old-device"], "should_remove": True},
        {"user_ids": ["u1"], "aliases": [{"alias_name": "lead-1", "alias_label": "crm"}], "device_ids": ["d1"]},
    ]


def test_only_adds_has_no_should_remove_field():
    assert build_cohort_changes([change("external_id", "u1")]) == [{"user_ids": ["u1"]}]


def test_empty_batch_is_an_empty_array():
    assert build_cohort_changes([]) == []


def test_more_than_1000_identifiers_is_refused():
    changes = [change("external_id", f"u{n}") for n in range(1000)]
    assert len(build_cohort_changes(changes)[0]["user_ids"]) == 1000
    with pytest.raises(ValueError, match="at most 1000 identifiers, got 1001"):
        build_cohort_changes(changes + [change("device_id", "d")])


def test_a_change_without_its_identifier_is_refused():
    broken = Change(1, False, "external_id:", "external_id", None, None, None, None)
    with pytest.raises(ValueError, match="no usable 'external_id' identifier"):
        build_cohort_changes([broken])


def test_count_changes():
    assert count_changes([change("external_id", "a"), change("external_id", "b", remove=True),
                          change("device_id", "c")]) == (2, 1)


def test_composed_cohort_changes_match_the_python_builder():
    import json

    from cohort_sync.braze.payload import compose_cohort_changes

    text = compose_cohort_changes(
        ['["gone"]', None, '["old-device"]'],
        ['["u1"]', '[{"alias_name":"lead-1","alias_label":"crm"}]', '["d1"]'],
    )
    assert json.loads(text) == build_cohort_changes([
        change("external_id", "gone", remove=True),
        change("device_id", "old-device", remove=True),
        change("external_id", "u1"),
        change("alias", ("lead-1", "crm")),
        change("device_id", "d1"),
    ])
    assert compose_cohort_changes([None, None, None], ['["u1"]', None, None]) == '[{"user_ids":["u1"]}]'
