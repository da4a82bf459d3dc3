"""Attribute syncs (cohort_sync_attribute_syncs) on DuckDB, PostgreSQL and Spark.

Each scenario runs on every engine: real dbt (in-process) diffs the model
against the acknowledged attribute state, and the publisher writes the
changed values to the local endpoint's profiles through /users/track
(inside `dbt run` on DuckDB, through `cohort-sync publish` elsewhere). The
models cast raw text columns per engine, so each kind of value arrives
with the warehouse type a user's model would give it.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from cohort_sync.braze.client import Ack, ObjectError
from cohort_sync.braze.payload import PROFILE_CHANGE_COLUMNS, ProfileChange, attribute_value, profile_request
from tests.sync_project import SyncProject
from tests.warehouses import ENGINES, PostgresWarehouse, SparkWarehouse, Warehouse

pytestmark = pytest.mark.dbt


#: How each engine's model turns a raw text column into a value of a kind
#: (the raw tables hold text, and bigint for integers).
CASTS = {
    "duckdb": {
        "double": "cast({c} as double)",
        "decimal": "cast({c} as decimal(12, 4))",
        "boolean": "cast({c} as boolean)",
        "date": "cast({c} as date)",
        "timestamp": "cast({c} as timestamp)",
        "timestamptz": "cast({c} as timestamptz)",
        "wall_clock": "cast({c} as timestamp)",
        "array": "string_split({c}, '|')",
        "json": "cast({c} as json)",  # keeps its text as given
    },
    "postgres": {
        "double": "cast({c} as double precision)",
        "decimal": "cast({c} as numeric(12, 4))",
        "boolean": "cast({c} as boolean)",
        "date": "cast({c} as date)",
        "timestamp": "cast({c} as timestamp)",
        "timestamptz": "cast({c} as timestamptz)",
        "wall_clock": "cast({c} as timestamp)",
        "array": "string_to_array({c}, '|')",
        "json": "cast({c} as json)",  # json, not jsonb: keeps its keys' order
    },
    "spark": {  # no JSON type
        "double": "cast({c} as double)",
        "decimal": "cast({c} as decimal(12, 4))",
        "boolean": "cast({c} as boolean)",
        "date": "cast({c} as date)",
        "timestamp": "cast({c} as timestamp)",
        "timestamptz": "cast({c} as timestamp)",  # text with an offset: the instant it names
        "wall_clock": "cast({c} as timestamp_ntz)",
        "array": "split({c}, '[|]')",
    },
}


def set_model(project: SyncProject, model: str, columns: dict[str, list[Any]], kinds: dict[str, str]) -> None:
    """(Re)write raw.<model> and the model reading it, each column cast to its kind
    (string by default; bigint is loaded as bigint)."""
    project.warehouse.load(model, columns, {c: "bigint" for c, kind in kinds.items() if kind == "bigint"})
    casts = CASTS[project.warehouse.name]
    select = ",\n    ".join(
        casts[kinds[c]].format(c=c) + f" as {c}" if kinds.get(c) in casts else c for c in columns
    )
    (project.root / "models" / f"{model}.sql").write_text(
        f"select\n    {select}\nfrom {project.warehouse.raw_schema}.{model}\n"
    )


def sent_value(kind: str, raw: Any) -> Any:
    """The JSON value Braze should hold for a raw value of a kind (None: not set)."""
    if raw is None:
        return None
    if kind in ("double", "decimal"):
        number = float(raw)
        return int(number) if number.is_integer() else number
    if kind == "boolean":
        return raw == "true"
    if kind in ("timestamp", "timestamptz"):
        at = datetime.fromisoformat(raw)
        at = (at if at.tzinfo else at.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
        return f"{at.year:04d}-" + at.strftime("%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
    if kind == "array":
        return sorted(set(raw.split("|")))
    if kind == "json":
        return json.loads(raw)
    return raw  # string, bigint, date


def model_profiles(columns: dict[str, list[Any]], kinds: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Per external_id, the attributes a model's rows should leave in Braze."""
    names = [c for c in columns if c != "external_id"]
    return {
        user: {n: sent_value(kinds.get(n, "string"), columns[n][i]) for n in names if columns[n][i] is not None}
        for i, user in enumerate(columns["external_id"])
    }


def profiles(braze) -> dict[str, dict[str, Any]]:
    """Per external_id, the attributes the endpoint holds."""
    return {p["external_id"]: p["attributes"] for p in braze.profiles() if p["external_id"] is not None}


def track_requests(braze, since: int = 0) -> list[dict[str, Any]]:
    return [r for r in braze.requests()[since:] if r["endpoint"] == "track" and "fault" not in r]


def sync_history(project: SyncProject, sync_id: str) -> list[dict[str, Any]]:
    return [row for row in project.history() if row["cohort_id"] == sync_id]


def ids(prefix: str, start: int, stop: int) -> list[str]:
    return [f"{prefix}{n:05d}" for n in range(start, stop)]


def synced(project: SyncProject, **vars: Any) -> None:
    assert project.sync(vars=vars or None), f"sync failed on {project.warehouse.name}"


# -- 2,500 users: the first run, three changes, nothing, other representations -------------------


def facts(n_users: int, engine: str) -> tuple[dict[str, list[Any]], dict[str, str]]:
    """A model of every kind of value (JSON where the engine has it), some nulls."""
    users = range(n_users)
    columns: dict[str, list[Any]] = {
        "external_id": ids("u", 0, n_users),
        "plan": [None if n % 97 == 0 else 'Zoë "the" \\ one' if n % 101 == 5 else ("free", "pro", "team")[n % 3]
                 for n in users],  # (some text JSON must escape)
        "visits": [n % 50 for n in users],
        "ltv": [f"{n * 1.25:.2f}" for n in users],
        "active": [("true", "false")[n % 2] for n in users],
        # (the farthest times, and one whose microseconds a double does not hold exactly)
        "last_seen": ["0001-01-01 12:00:00.001", "9999-12-31 23:59:59.999", "4253-05-31 22:20:37.929"][:n_users] + [
            f"2024-01-{1 + n % 28:02d} {n % 24:02d}:{n % 60:02d}:{(7 * n) % 60:02d}.{n % 1000:03d}" for n in users][3:],
        "signup": [f"2023-{1 + n % 12:02d}-{1 + n % 28:02d}" for n in users],
        "tags": [None if n % 89 == 0 else "|".join(("vip", "beta", "ios", "vip")[: 1 + n % 4]) for n in users],
    }
    kinds = {"visits": "bigint", "ltv": "double", "active": "boolean", "last_seen": "timestamp",
             "signup": "date", "tags": "array"}
    if engine != "spark":
        columns["prefs"] = [json.dumps({"theme": ("dark", "light")[n % 2], "lang": "en", "n": n}) for n in users]
        kinds["prefs"] = "json"
    return columns, kinds


def other_representations(columns: dict[str, list[Any]], kinds: dict[str, str]) -> tuple[dict, dict]:
    """The same values, written otherwise: integers as doubles (1.0), floats as
    decimals, times in another zone, arrays in another order, JSON keys reordered."""
    columns = dict(columns)
    columns["visits"] = [f"{v}.0" for v in columns["visits"]]
    columns["last_seen"] = [
        datetime.fromisoformat(v).replace(tzinfo=timezone.utc).astimezone(
            timezone(timedelta(hours=-5, minutes=-30))).isoformat(sep=" ")
        for v in columns["last_seen"]]
    columns["tags"] = [None if v is None else "|".join(reversed(v.split("|"))) for v in columns["tags"]]
    kinds = {**kinds, "visits": "double", "ltv": "decimal", "last_seen": "timestamptz"}
    if "prefs" in columns:
        columns["prefs"] = [json.dumps(dict(reversed(json.loads(v).items())), indent=1) for v in columns["prefs"]]
    return columns, kinds


def test_first_run_then_three_changes_then_nothing_then_other_representations(make_engine_project, braze):
    project = make_engine_project()
    engine = project.warehouse.name
    project.declare([], cohort_sync_attribute_syncs=[{"model": "customer_facts", "mode": "upsert"}])
    columns, kinds = facts(2500, engine)
    set_model(project, "customer_facts", columns, kinds)

    # 1. The first run: every non-null value of every user, in new profiles equal to the model.
    synced(project)
    kinds_read = project.query("select distinct attribute_name, value_type from cohort_sync_attribute_rows")
    assert dict(kinds_read) == {
        "plan": "string", "visits": "number", "ltv": "number", "active": "boolean", "last_seen": "time",
        "signup": "date", "tags": "array", **({"prefs": "json"} if "prefs" in columns else {}),
    }
    first = track_requests(braze)
    assert sum(r["objects"] for r in first) == 2500 and max(r["objects"] for r in first) == 75
    assert profiles(braze) == model_profiles(columns, kinds)
    values = sum(len(attributes) for attributes in model_profiles(columns, kinds).values())
    [row] = sync_history(project, "customer_facts")
    assert (row["status"], row["added"], row["removed"], row["data_points"]) == ("success", values, 0, values)
    assert sum(r["data_points"] for r in first) == values
    # each value as the warehouse rendered it into its object is what payload.attribute_value makes of its text
    planned = project.query("select attribute_name, should_remove, value_type, value_text, value_json "
                            "from cohort_sync_attribute_changes")
    assert len(planned) == values
    for name, remove, kind, text, rendered in planned:  # (as text again: True == 1 and 3 == 3.0 in Python)
        assert json.dumps(json.loads("{" + rendered + "}")) == json.dumps(
            {name: None if remove else attribute_value(kind, text)}), rendered

    # 2. Three users change one attribute each: one object each, one attribute each.
    columns["plan"][10] = "enterprise"
    columns["visits"][20] = 999
    columns["tags"][30] = "android|beta"
    set_model(project, "customer_facts", columns, kinds)
    sent = len(braze.requests())
    synced(project)
    [request] = track_requests(braze, sent)
    assert (request["objects"], request["attribute_counts"], request["data_points"]) == (3, [1, 1, 1], 3)
    assert profiles(braze) == model_profiles(columns, kinds)
    last = sync_history(project, "customer_facts")[-1]
    assert (last["status"], last["added"], last["removed"], last["data_points"]) == ("success", 3, 0, 3)

    # 3. Straight after: nothing to send.
    sent = len(braze.requests())
    synced(project)
    assert track_requests(braze, sent) == []
    last = sync_history(project, "customer_facts")[-1]
    assert (last["status"], last["added"], last["data_points"]) == ("success", 0, 0)

    # 4. The same values in other representations: nothing to send.
    columns, kinds = other_representations(columns, kinds)
    set_model(project, "customer_facts", columns, kinds)
    synced(project)
    assert track_requests(braze, sent) == []
    assert project.query("select count(*) from cohort_sync_attribute_changes") == [(0,)]
    if "prefs" in columns:  # the text differs (DuckDB and PostgreSQL's json keep it as given), the value does not
        [(text,)] = project.query("select value_text from cohort_sync_attribute_rows "
                                  "where member_key = 'external_id:u00001' and attribute_name = 'prefs'")
        assert text == columns["prefs"][1] and json.loads(text) == json.loads(facts(2, engine)[0]["prefs"][1])


# -- nulls and leavers, update and upsert --------------------------------------------------------


def test_nulls_and_leavers_as_declared_and_update_mode_creates_no_profile(make_engine_project, braze):
    """Two syncs over the same users, with each setting of `nulls` and `on_leave`:
    one unsets (mode upsert), the other keeps (mode update)."""
    known = ids("known", 1, 5)
    braze.seed_profiles([{"external_id": m} for m in known])
    project = make_engine_project()
    project.declare([], cohort_sync_attribute_syncs=[
        {"model": "facts_unset", "mode": "upsert", "nulls": "unset", "on_leave": "unset"},
        {"model": "facts_keep", "mode": "update", "nulls": "keep", "on_leave": "keep",
         "attributes": {"k_tier": "tier", "k_score": "score"}},
    ])

    def set_models(unset_users, keep_users, tiers):
        set_model(project, "facts_unset", {
            "external_id": unset_users, "u_tier": [tiers.get(m, "gold") for m in unset_users],
            "u_score": [7] * len(unset_users)}, {"u_score": "bigint"})
        set_model(project, "facts_keep", {
            "external_id": keep_users, "tier": [tiers.get(m, "gold") for m in keep_users],
            "score": [7] * len(keep_users)}, {"score": "bigint"})

    # 1. upsert creates the user Braze does not have; update leaves its one alone
    set_models(known + ["fresh"], known + ["ghost"], {})
    synced(project)
    created = {(r["objects"], r["created"], r["ignored"]) for r in track_requests(braze)}
    assert created == {(5, 1, 0), (5, 0, 1)}
    everything = {"u_tier": "gold", "u_score": 7, "k_tier": "gold", "k_score": 7}
    assert profiles(braze) == {**{m: everything for m in known}, "fresh": {"u_tier": "gold", "u_score": 7}}
    assert "ghost" not in profiles(braze)

    # 2. known00001's tier becomes null, known00002 leaves both models
    sent = len(braze.requests())
    now = [known[0], *known[2:]]
    set_models(now + ["fresh"], now + ["ghost"], {known[0]: None})
    synced(project)
    [request] = track_requests(braze, sent)  # the keeping sync sends nothing
    assert (request["objects"], sorted(request["attribute_counts"]), request["data_points"]) == (2, [1, 2], 3)
    assert profiles(braze) == {
        known[0]: {"u_score": 7, "k_tier": "gold", "k_score": 7},  # unset's tier unset, keep's kept
        known[1]: {"k_tier": "gold", "k_score": 7},  # left: unset's values unset, keep's kept
        **{m: everything for m in known[2:]}, "fresh": {"u_tier": "gold", "u_score": 7},
    }
    last = {row["cohort_id"]: row for row in project.history()[-2:]}
    assert (last["facts_unset"]["added"], last["facts_unset"]["removed"], last["facts_unset"]["data_points"]) == (0, 3, 3)
    assert (last["facts_keep"]["status"], last["facts_keep"]["added"], last["facts_keep"]["removed"]) == ("success", 0, 0)

    # 3. the tier is back: the unsetting sync writes it again; Braze still holds the kept one
    sent = len(braze.requests())
    set_models(now + ["fresh"], now + ["ghost"], {})
    synced(project)
    [request] = track_requests(braze, sent)
    assert (request["objects"], request["attribute_counts"]) == (1, [1])
    assert profiles(braze)[known[0]] == everything


# -- bad input ----------------------------------------------------------------------------------

LONG_NAME = "a" * 256


def test_each_kind_of_bad_input_is_rejected_with_its_reason_and_never_sent(make_engine_project, braze):
    project = make_engine_project()
    project.declare([], cohort_sync_max_array_length=3, cohort_sync_attribute_syncs=[{
        "model": "messy_facts", "mode": "upsert",
        "attributes": {"nickname": "nickname", "score": "score", "tags": "tags", "country": "country",
                       "dob": "dob", "email_subscribe": "email_subscribe", "$odd": "odd", LONG_NAME: "odd"},
    }])
    good = {"nickname": "ann", "score": "1.5", "tags": "a|b|a|c", "country": "fr", "dob": "1990-05-17",
            "email_subscribe": "Opted_In", "odd": "x"}
    rows = [
        ("u01", {}),
        ("u02", {"nickname": "x" * 256}),
        ("u03", {"tags": "a|b|c|d"}),
        ("u04", {"country": "XX"}),
        ("u05", {"dob": "2020-13-01"}),
        ("u06", {"email_subscribe": "maybe"}),
        ("u07", {"score": "NaN"}),
        ("u08", {"score": "Infinity"}),
        ("u09", {"score": "-Infinity"}),
        ("u10", {"nickname": "bo"}), ("u10", {"nickname": "bob"}),  # two rows that disagree
        ("u11", {}), ("u11", {}),  # two rows that agree
    ]
    columns = {"external_id": [user for user, _ in rows]}
    for name in good:
        columns[name] = [{**good, **changed}[name] for _, changed in rows]
    set_model(project, "messy_facts", columns, {"score": "double", "tags": "array"})
    synced(project)

    rejects = project.query(
        "select attribute_name, reject_reason, external_id, source_rows from cohort_sync_rejects "
        "where cohort_id = 'messy_facts'"
    )
    # a value's reject names its attribute; a reject of the whole row (two rows disagree) is one per model row
    assert sorted((a or "", r, u, int(n)) for a, r, u, n in rejects) == sorted([
        *((name, "invalid_attribute_name", user, 2 if user == "u11" else 1)
          for name in ("$odd", LONG_NAME) for user in sorted({u for u, _ in rows}) if user != "u10"),
        ("nickname", "string_too_long", "u02", 1),
        ("tags", "array_too_long", "u03", 1),
        ("country", "invalid_country", "u04", 1),
        ("dob", "invalid_dob", "u05", 1),
        ("email_subscribe", "invalid_email_subscribe", "u06", 1),
        ("score", "not_a_finite_number", "u07", 1),
        ("score", "not_a_finite_number", "u08", 1),
        ("score", "not_a_finite_number", "u09", 1),
        ("", "conflicting_rows", "u10", 2),
    ])

    sent_good = {"nickname": "ann", "score": 1.5, "tags": ["a", "b", "c"], "country": "FR", "dob": "1990-05-17",
                 "email_subscribe": "opted_in"}
    rejected = {"u02": "nickname", "u03": "tags", "u04": "country", "u05": "dob", "u06": "email_subscribe",
                "u07": "score", "u08": "score", "u09": "score"}
    assert profiles(braze) == {  # u10 has no profile: none of its values were sent
        user: {k: v for k, v in sent_good.items() if k != rejected.get(user)}
        for user in ("u01", "u02", "u03", "u04", "u05", "u06", "u07", "u08", "u09", "u11")
    }
    [row] = sync_history(project, "messy_facts")
    # 10 users x 6 values, less the 8 rejected; email_subscribe is free (9 sent)
    assert (row["status"], row["added"], row["data_points"]) == ("success", 52, 52 - 9)


# -- the guard -----------------------------------------------------------------------------------


def test_unsetting_60_percent_of_a_syncs_values_is_blocked_until_allowed(make_engine_project, braze):
    project = make_engine_project()
    project.declare([], cohort_sync_attribute_syncs=[{"model": "plans", "mode": "upsert", "on_leave": "unset"}])
    users = ids("u", 0, 100)

    def set_users(members):
        set_model(project, "plans", {"external_id": members, "plan": ["pro"] * len(members),
                                     "seats": list(range(len(members)))}, {"seats": "bigint"})

    set_users(users)
    synced(project)
    before = profiles(braze)
    assert len(before) == 100

    set_users(users[:40])  # 60 users leave: 120 of the 200 values unset
    sent = len(braze.requests())
    assert not project.sync()
    assert track_requests(braze, sent) == []
    assert profiles(braze) == before
    row = sync_history(project, "plans")[-1]
    assert row["status"] == "blocked"
    assert "the run would unset 120 of the 200 values the sync holds in Braze (60.0%), more than the 50% limit" in (
        row["error"]), row["error"]
    assert "cohort_sync_allow_removals: ['plans']" in row["error"]

    synced(project, cohort_sync_allow_removals=["plans"])
    assert sorted(r["objects"] for r in track_requests(braze, sent)) == [60]
    assert profiles(braze) == {**{m: before[m] for m in users[:40]}, **{m: {} for m in users[40:]}}
    row = sync_history(project, "plans")[-1]
    assert (row["status"], row["added"], row["removed"], row["data_points"]) == ("success", 0, 120, 120)


# -- times, whatever the session's zone ----------------------------------------------------------

ZONE = "America/New_York"


class NewYorkDuckDB(Warehouse):
    def output(self):
        return {**super().output(), "settings": {"TimeZone": ZONE}}


class NewYorkSpark(SparkWarehouse):
    def output(self):
        output = super().output()
        output["server_side_parameters"] = {**output["server_side_parameters"], "spark.sql.session.timeZone": ZONE}
        return output


@pytest.mark.parametrize("engine", ENGINES)
def test_times_and_dates_are_sent_the_same_whatever_the_sessions_zone(engine, request, tmp_path, braze_env, braze):
    """dbt's sessions run in New York time: a timestamp without a zone (Spark's
    timestamp_ntz, which a cast to timestamp reads in the session's zone) is
    still sent as UTC, an instant as itself, a date as is."""
    if engine == "duckdb":
        project = SyncProject(tmp_path / "project", None, NewYorkDuckDB)
    elif engine == "postgres":
        server = request.getfixturevalue("postgres_server")
        project = SyncProject(tmp_path / "project", None, lambda root: PostgresWarehouse(root, server))
        connection = server.connect()  # not `with connection`: that opens a transaction block
        with connection.cursor() as cursor:
            cursor.execute(f"alter database {project.warehouse.dbname} set timezone = '{ZONE}'")
        connection.close()
    else:
        spark = request.getfixturevalue("spark_session")
        project = SyncProject(tmp_path / "project", None, lambda root: NewYorkSpark(root, spark))
        request.addfinalizer(lambda: spark.session.conf.set("spark.sql.session.timeZone", "UTC"))  # shared
    project.declare([], cohort_sync_attribute_syncs=[{"model": "visits", "mode": "upsert"}])
    set_model(project, "visits", {
        "external_id": ["u1"], "dob": ["1990-05-17"], "first_visit": ["2023-12-31"],
        "seen_at": ["2024-07-01 12:34:56.789"], "paid_at": ["2024-07-01 12:34:56.789+02:00"],
    }, {"dob": "date", "first_visit": "date", "seen_at": "wall_clock", "paid_at": "timestamptz"})
    synced(project)
    assert profiles(braze) == {"u1": {"dob": "1990-05-17", "first_visit": "2023-12-31",
                                      "seen_at": "2024-07-01T12:34:56.789Z", "paid_at": "2024-07-01T10:34:56.789Z"}}


# -- what review found: infinite times, JSON Braze refuses, exact big numbers, mixed identifiers --


@pytest.mark.parametrize("warehouse", ["duckdb", "postgres"], indirect=True)  # the engines with infinity and JSON
def test_infinite_times_and_json_braze_refuses_are_rejects_and_big_integers_go_exactly(make_engine_project, braze):
    project = make_engine_project()
    project.declare([], cohort_sync_attribute_syncs=[{"model": "odd_facts", "mode": "upsert"}])
    users = ids("u", 0, 6)
    project.warehouse.load("odd_facts", {
        "external_id": users,
        "valid_until": ["2030-01-01 00:00:00", "infinity", "2030-01-01 00:00:00", "2030-01-01 00:00:00",
                        "2030-01-01 00:00:00", "2030-01-01 00:00:00"],
        "prefs": ['{"a": {"b": 1}}', '{"a": 1}', "[1, 2]", "null", '{"a.b": 1}', '{"a": {"$time": "2020-01-01"}}'],
        "big": ["9007199254740993"] * 6,
    }, {})
    duckdb = project.warehouse.name == "duckdb"
    numeric = "decimal(30, 0)" if duckdb else "numeric(30, 0)"
    (project.root / "models" / "odd_facts.sql").write_text(
        f"select external_id, cast(valid_until as timestamp) as valid_until, cast(prefs as json) as prefs, "
        f"cast(big as bigint) as big, cast(cast(big as {numeric}) * 1000 as {numeric}) as bigger"
        + (", cast('2030-01-01 00:00:00.123456789' as timestamp_ns) as precise" if duckdb else "")
        + f" from {project.warehouse.raw_schema}.odd_facts\n")
    synced(project)
    rejects = project.query("select attribute_name, reject_reason, external_id from cohort_sync_rejects "
                            "where cohort_id = 'odd_facts'")
    assert sorted(rejects) == [("prefs", "invalid_json", "u00002"), ("prefs", "invalid_json", "u00003"),
                               ("prefs", "invalid_json", "u00004"), ("valid_until", "invalid_time", "u00001")]
    held = profiles(braze)
    assert held["u00000"] == {"valid_until": "2030-01-01T00:00:00.000Z", "prefs": {"a": {"b": 1}},
                              "big": 9007199254740993, "bigger": 9007199254740993000,
                              **({"precise": "2030-01-01T00:00:00.123Z"} if duckdb else {})}
    assert "valid_until" not in held["u00001"] and held["u00001"]["prefs"] == {"a": 1}
    assert held["u00005"]["prefs"] == {"a": {"$time": "2020-01-01"}}
    assert [sorted(p) for u, p in sorted(held.items()) if u in ("u00002", "u00003", "u00004")] == [
        ["big", "bigger", *(["precise"] if duckdb else []), "valid_until"]] * 3


def test_when_identifiers_mix_users_who_only_unset_go_first(make_engine_project, braze):
    """A phone lead who signed up: unset under the phone, written under the
    external id, in one run. The unset is acknowledged before the write, so
    the profile keeps the value."""
    project = make_engine_project()
    project.declare([], cohort_sync_attribute_syncs=[{
        "model": "leads", "mode": "update", "identifiers": ["external_id", "phone"], "on_leave": "unset"}])
    braze.seed_profiles([{"external_id": "u1", "phone": "+15550001"}, {"external_id": "u2"}])
    set_model(project, "leads", {"external_id": [None, "u2"], "phone": ["+15550001", None],
                                 "plan": ["gold", "free"]}, {})
    synced(project)
    assert profiles(braze) == {"u1": {"plan": "gold"}, "u2": {"plan": "free"}}

    set_model(project, "leads", {"external_id": ["u1", "u2"], "phone": ["+15550001", None],
                                 "plan": ["gold", "free"]}, {})
    sent = len(braze.requests())
    synced(project)
    assert project.query("select member_key, change_kind, batch_number from cohort_sync_attribute_changes "
                         "order by batch_number") == [("phone:+15550001", "unset", 1), ("external_id:u1", "new", 2)]
    assert [r["attribute_counts"] for r in track_requests(braze, sent)] == [[1], [1]]
    assert profiles(braze) == {"u1": {"plan": "gold"}, "u2": {"plan": "free"}}


def test_each_request_rendered_in_the_warehouse_is_the_one_python_renders_from_its_values(make_engine_project):
    """The page query renders each batch whole (every identifier type, an
    alias whose name and label hold colons and quotes, text JSON must
    escape): the request is what
    payload.profile_request builds from the same plan's values, and a
    rejected object is read back as the user it was."""
    project = make_engine_project()
    project.declare([], cohort_sync_users_track_batch_size=4, cohort_sync_attribute_syncs=[{
        "model": "people", "mode": "upsert", "identifiers": ["external_id", "alias", "braze_id", "email", "phone"],
        "attributes": {"tier": "tier", "orders": "orders"}}])
    people = [  # external_id, alias_name, alias_label, braze_id, email, phone, tier, orders
        ("u1", None, None, None, None, None, 'Zoë "the" \\ one', 3),
        (None, 'lead:"1"', "crm\\x:y", None, None, None, "a", None),
        (None, "7", "8:9", None, None, None, None, 1),
        (None, None, None, "b1", None, None, "t", None),
        (None, None, None, None, "ann@example.com", None, "x", 12),
        (None, None, None, None, "bob@example.com", None, 'says ,"email":"no"', None),
        (None, None, None, None, None, "+14155550100", None, 7),
    ]
    names = ["external_id", "alias_name", "alias_label", "braze_id", "email", "phone", "tier", "orders"]
    set_model(project, "people", {name: [row[n] for row in people] for n, name in enumerate(names)},
              {"orders": "bigint"})
    assert project.run(vars={"cohort_sync_publish_on_run": False}).success
    ledger = project.ledger()
    try:
        [(plan_id,)] = ledger.engine.query(f"select distinct plan_id from {ledger.relations.attribute_changes}")
        [sync] = [c for c in ledger.cohorts() if c.cohort_id == "people"]
        ours = list(ledger.pending_profile_requests(plan_id, [sync]))
        rows = ledger.engine.query(f"""select {', '.join(PROFILE_CHANGE_COLUMNS)}
                                       from {ledger.relations.attribute_changes}
                                       order by batch_number, member_key, attribute_name""")
        python = [profile_request("profile", number, [ProfileChange(*row) for row in rows if row[0] == number],
                                  "upsert") for number in sorted({row[0] for row in rows})]
        assert [len(q.objects) for q in ours] == [4, 3]
        assert [json.loads(q.body) for q in ours] == [json.loads(q.body) for q in python]
        assert [(q.batch_number, q.parts, q.points) for q in ours] == [
            (q.batch_number, q.parts, q.points) for q in python]
        # Braze rejects every object of the first batch: each is read back as the user it is
        first = ledger.with_rejected_changes(plan_id, ours[0], Ack(status=201, attempts=1, errors=tuple(
            ObjectError("attributes", i, "invalid") for i in range(4))))
        assert first.objects == python[0].objects
    finally:
        ledger.engine.close()
