"""CaveSource against caveclient's own ``CAVEclientMock`` and a fake materialization server.

The fake server (``FakeCave``) answers the real caveclient requests, mocked with ``responses``:
query POSTs with Arrow IPC stream bodies (``Content-Type: data.arrow``, as caveclient's
``deserialize_query_response`` expects), table-metadata GETs, the server's row cap with its
``Warning: 201 - "Limited query to N rows`` header, and scripted failures (HTTP errors, timeouts,
a kill) by query number. No sleeping: the backoff waits are recorded instead.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
import responses
from caveclient.tools.testing import CAVEclientMock

import connectomics.sources.cave as cave
from connectomics.cache import PartStore, TableCache
from connectomics.pull import pull_column_tables
from connectomics.schema import (
    CELL_TYPE_TABLE, COLUMN_TABLE, COLUMN_TABLES, MTYPE_TABLE, NUCLEUS_TABLE, PROOFREADING_TABLE,
    SCHEMAS, SYNAPSE_TABLE, validate,
)
from connectomics.sources.base import SourceError
from connectomics.sources.cave import CaveSource

from tests.cave_mock import (  # noqa: E402
    DATASTACK, MOCK_TOKEN, VERSION, FakeCave, Killed, expected_synapses, make_world,
)


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def sleeps(monkeypatch) -> list[float]:
    """Backoff waits, recorded instead of slept."""
    waits: list[float] = []
    monkeypatch.setattr(cave, "_sleep", waits.append)
    return waits


@pytest.fixture
def client():
    return CAVEclientMock(
        datastack_name=DATASTACK, materialization=True,
        available_materialization_versions=[VERSION], set_version=VERSION,
    )


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def source(client, **kw) -> CaveSource:
    kw = {"batch_size": 4, "timeout_s": 7.0, "max_retries": 3, "backoff_s": 0.25, **kw}
    return CaveSource(DATASTACK, VERSION, client=client, **kw)


def column_roots(world) -> np.ndarray:
    return world[COLUMN_TABLE]["pt_root_id"].to_numpy()


# -- batching ----------------------------------------------------------------------------------
def test_synapses_one_query_per_batch_with_timeout(client, rsps):
    world = make_world(n_cells=23, n_column=23, n_syn=400)
    fake = FakeCave(world).install(rsps)
    roots = column_roots(world)[::-1]  # order does not matter
    got = source(client, batch_size=5).fetch_synapses(roots, progress=False)

    assert fake.n_queries == math.ceil(23 / 5)
    pres = [q["filters"][SYNAPSE_TABLE]["pre_pt_root_id"] for q in fake.answered]
    assert sorted(sum(pres, [])) == sorted(roots.tolist())
    assert all(len(p) <= 5 for p in pres)
    assert all(sorted(q["filters"][SYNAPSE_TABLE]["post_pt_root_id"]) == sorted(roots.tolist())
               for q in fake.answered)
    assert fake.timeouts == [7.0] * fake.n_queries  # every request carries the imposed timeout
    pd.testing.assert_frame_equal(got, expected_synapses(world, roots))
    validate(got, SYNAPSE_TABLE)


def test_filter_lists_are_batched_and_reference_tables_joined(client, rsps):
    world = make_world(n_cells=12)
    fake = FakeCave(world).install(rsps)
    targets = world[NUCLEUS_TABLE]["id"].tolist()
    got = source(client, batch_size=5).fetch_table(CELL_TYPE_TABLE, filter_in={"target_id": targets},
                                                   progress=False)
    assert fake.n_queries == 3
    assert all(len(q["filters"][CELL_TYPE_TABLE]["target_id"]) <= 5 for q in fake.answered)
    assert list(got.columns) == list(SCHEMAS[CELL_TYPE_TABLE])
    ref = world[CELL_TYPE_TABLE].sort_values("id").reset_index(drop=True)
    assert got["id"].tolist() == ref["id"].tolist()
    assert got["pt_root_id"].tolist() == ref["pt_root_id"].tolist()  # from the joined nucleus table
    np.testing.assert_allclose(got["pt_position_x"], ref["pt_position_x"])
    validate(got, CELL_TYPE_TABLE)


def test_missing_columns_are_filled_as_documented(client, rsps):
    world = make_world()
    world[NUCLEUS_TABLE] = world[NUCLEUS_TABLE].drop(columns=["volume"])
    world[PROOFREADING_TABLE] = world[PROOFREADING_TABLE].drop(
        columns=["valid_id", "strategy_dendrite", "strategy_axon"])
    FakeCave(world).install(rsps)
    src = source(client)
    nuc = src.fetch_table(NUCLEUS_TABLE, progress=False)
    assert (nuc["volume"] == 0.0).all()
    proof = src.fetch_table(PROOFREADING_TABLE, filter_in={"pt_root_id": column_roots(world)},
                            progress=False)
    assert proof["valid_id"].tolist() == proof["pt_root_id"].tolist()
    assert proof["strategy_axon"].isna().all()
    validate(nuc, NUCLEUS_TABLE)
    validate(proof, PROOFREADING_TABLE)


# -- the server's row cap ----------------------------------------------------------------------
def test_capped_batch_is_split_until_complete(client, rsps, caplog):
    world = make_world(n_cells=12, n_column=12, n_syn=200)
    roots = column_roots(world)
    fake = FakeCave(world, cap=25).install(rsps)
    got = source(client, batch_size=6).fetch_synapses(roots, progress=False)

    pd.testing.assert_frame_equal(got, expected_synapses(world, roots))
    assert fake.n_queries > 2  # the capped batches were split
    final = [q for q in fake.answered if q["rows"] < 25]
    assert sum(q["rows"] for q in final) >= len(got)
    assert not any("Limited query" in r.getMessage() for r in caplog.records)  # handled, not logged


def test_single_capped_pre_id_splits_post_ids(client, rsps):
    world = make_world(n_cells=8, n_column=8, n_syn=20, hub=0, hub_syn=40)
    roots = column_roots(world)
    fake = FakeCave(world, cap=12).install(rsps)
    got = source(client, batch_size=4).fetch_synapses(roots, progress=False)

    pd.testing.assert_frame_equal(got, expected_synapses(world, roots))
    split_post = [q for q in fake.answered
                  if q["filters"][SYNAPSE_TABLE]["pre_pt_root_id"] == [int(roots[0])]
                  and len(q["filters"][SYNAPSE_TABLE]["post_pt_root_id"]) < len(roots)]
    assert split_post, "the hub's post ids were never split"


def test_cap_without_header_detected_by_known_row_limit(client, rsps):
    world = make_world(n_cells=10, n_column=10, n_syn=150)
    roots = column_roots(world)
    FakeCave(world, cap=20, cap_header=False).install(rsps)
    got = source(client, batch_size=5, row_limit=20).fetch_synapses(roots, progress=False)
    pd.testing.assert_frame_equal(got, expected_synapses(world, roots))


@pytest.mark.parametrize("n_rows, cap", [(10, 5), (6, 6), (11, 4)])
def test_capped_unfiltered_table_is_read_in_pages(client, rsps, n_rows, cap):
    """No filter left to split: page with offsets (issue 12.7) instead of aborting."""
    world = make_world(n_cells=n_rows)
    fake = FakeCave(world, cap=cap).install(rsps)
    got = source(client).fetch_table(NUCLEUS_TABLE, progress=False)
    assert got["id"].tolist() == sorted(world[NUCLEUS_TABLE]["id"])
    assert fake.n_queries == n_rows // cap + 1  # full pages, then one short (maybe empty) page


def test_column_table_exactly_at_the_cap_is_complete(client, rsps, tmp_path):
    world = make_world(n_cells=10, n_column=6, n_syn=100)
    FakeCave(world, cap=6).install(rsps)  # the column table has exactly the cap's rows
    tables = pull_column_tables(source(client, batch_size=2), TableCache(tmp_path, DATASTACK, VERSION),
                                progress=False)
    assert sorted(tables[COLUMN_TABLE]["pt_root_id"]) == sorted(column_roots(world))


# -- retries, timeouts -------------------------------------------------------------------------
@pytest.mark.parametrize("answer, wait", [
    ((503, {"Content-Type": "application/json"}, json.dumps({"message": "overloaded"})), 0.25),
    ((502, {}, "bad gateway"), 0.25),
    ((429, {"Retry-After": "3"}, "slow down"), 3.0),
])
def test_transient_error_then_success(client, rsps, sleeps, answer, wait):
    world = make_world(n_cells=6, n_column=6)
    roots = column_roots(world)
    fake = FakeCave(world).install(rsps)
    fake.failures[0] = answer
    got = source(client, batch_size=10).fetch_synapses(roots, progress=False)
    assert fake.n_queries == 2
    assert sleeps == [wait]
    pd.testing.assert_frame_equal(got, expected_synapses(world, roots))


def test_persistent_5xx_is_a_source_error_after_backoff(client, rsps, sleeps):
    world = make_world()
    fake = FakeCave(world).install(rsps)
    fake.failures = {n: (503, {}, "down") for n in range(10)}
    with pytest.raises(SourceError, match=r"HTTP 503.*4 attempt"):
        source(client, max_retries=3, backoff_s=0.25).fetch_synapses(column_roots(world), progress=False)
    assert fake.n_queries == 4
    assert sleeps == [0.25, 0.5, 1.0]


@pytest.mark.parametrize("exc", [requests.exceptions.ReadTimeout, requests.exceptions.ConnectTimeout])
def test_timeout_after_retries_is_a_source_error(client, rsps, sleeps, exc):
    world = make_world()
    fake = FakeCave(world).install(rsps)
    fake.failures = {n: exc("timed out") for n in range(10)}
    with pytest.raises(SourceError, match=r"no answer within 7 s, 3 attempt") as err:
        source(client, max_retries=2).fetch_table(NUCLEUS_TABLE, progress=False)
    assert fake.n_queries == 3
    assert len(sleeps) == 2
    assert "run the pull again" in str(err.value)


def test_timeout_then_success(client, rsps):
    world = make_world()
    fake = FakeCave(world).install(rsps)
    fake.failures[0] = requests.exceptions.ReadTimeout("slow")
    got = source(client).fetch_table(NUCLEUS_TABLE, progress=False)
    assert len(got) == len(world[NUCLEUS_TABLE])


def test_client_construction_requests_get_a_timeout(rsps):
    rsps.add(responses.GET, "https://example.org/x", json={})
    with cave._default_timeout(3.5):
        requests.get("https://example.org/x")
        requests.get("https://example.org/x", timeout=1)
    requests.get("https://example.org/x")
    assert [c.request.req_kwargs["timeout"] for c in rsps.calls] == [3.5, 1, None]


# -- tokens ------------------------------------------------------------------------------------
def test_missing_token_says_how_to_set_one_up(rsps, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no caveclient secret file
    monkeypatch.delenv(cave.TOKEN_ENV, raising=False)
    src = CaveSource("minnie65_public", 1300)
    with pytest.raises(SourceError) as err:
        src.fetch_table(NUCLEUS_TABLE, progress=False)
    msg = str(err.value)
    for hint in ("no CAVE auth token", "caveclient setup-token", "save_token", cave.TOKEN_ENV, "--token-file"):
        assert hint in msg
    assert len(rsps.calls) == 0  # failed before any request


def test_unreadable_token_file_is_a_source_error(tmp_path):
    src = CaveSource(auth_token_file=tmp_path / "nope.txt")
    with pytest.raises(SourceError, match="cannot read the CAVE token file"):
        src.fetch_synapses(np.array([1, 2]), progress=False)


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_token_is_a_clear_error_without_the_token(client, rsps, status):
    world = make_world()
    fake = FakeCave(world).install(rsps)
    fake.failures = {n: (status, {"Content-Type": "text/plain"}, f"bad token {MOCK_TOKEN}") for n in range(5)}
    with pytest.raises(SourceError, match=f"rejected the auth token \\(HTTP {status}\\)") as err:
        source(client).fetch_synapses(column_roots(world), progress=False)
    assert fake.n_queries == 1  # not retried
    assert "caveclient setup-token" in str(err.value)
    assert MOCK_TOKEN not in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_redirect_to_login_page_is_a_token_error(client, rsps):
    login = "https://global.example.org/sticky_auth/login"
    rsps.add(responses.GET, login, body="<html>log in</html>", content_type="text/html")
    world = make_world()
    fake = FakeCave(world).install(rsps)
    fake.failures[0] = (302, {"Location": login}, "")
    with pytest.raises(SourceError, match="login page") as err:
        source(client).fetch_table(NUCLEUS_TABLE, progress=False)
    assert "caveclient setup-token" in str(err.value)


@pytest.mark.parametrize("how", ["argument", "json file", "text file", "env"])
def test_token_lookup(client, rsps, monkeypatch, tmp_path, how):
    token = "feedfacefeedfacefeedfacefeedface"
    built: list[dict] = []

    def fake_caveclient(datastack_name, **kw):
        built.append({"datastack_name": datastack_name, **kw})
        return client

    monkeypatch.setattr("caveclient.CAVEclient", fake_caveclient)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv(cave.TOKEN_ENV, raising=False)
    kw: dict = {}
    if how == "argument":
        kw["auth_token"] = token
    elif how == "json file":
        (tmp_path / "secret.json").write_text(json.dumps({"token": token}))
        kw["auth_token_file"] = tmp_path / "secret.json"
    elif how == "text file":
        (tmp_path / "token.txt").write_text(token + "\n")
        kw["auth_token_file"] = tmp_path / "token.txt"
    else:
        monkeypatch.setenv(cave.TOKEN_ENV, token)
    world = make_world()
    FakeCave(world).install(rsps)
    got = CaveSource(DATASTACK, VERSION, **kw).fetch_table(NUCLEUS_TABLE, progress=False)
    assert len(got) == len(world[NUCLEUS_TABLE])
    assert built == [{"datastack_name": DATASTACK, "server_address": None, "auth_token": token,
                      "version": VERSION}]


def test_token_is_not_in_describe_or_repr():
    secret = "0123456789abcdef0123456789abcdef"
    src = CaveSource(auth_token=secret, server_address="https://global.example.org")
    assert secret not in repr(src)
    assert secret not in json.dumps(src.describe())
    assert src.describe() == {"source": "cave", "datastack": "minnie65_public", "version": 1300,
                              "server_address": "https://global.example.org"}


# -- resuming ----------------------------------------------------------------------------------
def test_killed_pull_resumes_to_the_uninterrupted_result(client, rsps, tmp_path):
    world = make_world(n_cells=14, n_column=14, n_syn=400, seed=3)
    roots = column_roots(world)
    FakeCave(world).install(rsps)
    uninterrupted = source(client, batch_size=3).fetch_synapses(roots, progress=False)
    rsps.reset()

    parts = PartStore(tmp_path / "synapses.parts")
    fake = FakeCave(world).install(rsps)
    fake.failures[2] = Killed()  # the third of five batches
    with pytest.raises(Killed):
        source(client, batch_size=3).fetch_synapses(roots, parts=parts, progress=False)
    assert len(parts.keys()) == 2
    rsps.reset()

    fake = FakeCave(world).install(rsps)
    resumed = source(client, batch_size=3).fetch_synapses(roots, parts=parts, progress=False)
    assert fake.n_queries == 3  # only the batches not yet done
    pd.testing.assert_frame_equal(resumed, uninterrupted)
    keys = parts.keys()
    assert len(keys) == 5 and keys == sorted(keys) and [k[-5:] for k in keys] == [f"{i:05d}" for i in range(5)]


def test_parts_of_a_different_pull_are_not_mixed_in(client, rsps, tmp_path):
    world = make_world(n_cells=10, n_column=10, n_syn=200)
    roots = column_roots(world)
    parts = PartStore(tmp_path / "parts")
    FakeCave(world).install(rsps)
    source(client, batch_size=3).fetch_synapses(roots[:7], parts=parts, progress=False)
    got = source(client, batch_size=3).fetch_synapses(roots, parts=parts, progress=False)
    pd.testing.assert_frame_equal(got, expected_synapses(world, roots))


# -- end to end --------------------------------------------------------------------------------
def test_pull_column_tables_end_to_end_then_from_cache(client, rsps, tmp_path):
    world = make_world(n_cells=10, n_column=6, n_syn=300)
    fake = FakeCave(world).install(rsps)
    cache = TableCache(tmp_path, DATASTACK, VERSION)
    src = source(client, batch_size=4)
    tables = pull_column_tables(src, cache, progress=False)

    assert set(tables) == set(COLUMN_TABLES)
    roots = column_roots(world)
    assert sorted(tables[COLUMN_TABLE]["pt_root_id"]) == sorted(roots)
    assert len(tables[MTYPE_TABLE]) == len(tables[CELL_TYPE_TABLE]) == len(tables[NUCLEUS_TABLE]) == 6
    assert sorted(tables[PROOFREADING_TABLE]["pt_root_id"]) == sorted(roots)
    pd.testing.assert_frame_equal(tables[SYNAPSE_TABLE], expected_synapses(world, roots))
    # the column table whole, four filtered tables and the synapses, 4 values/ids per query
    assert fake.n_queries == 1 + 4 * math.ceil(6 / 4) + math.ceil(6 / 4)
    manifest = cache.manifest()
    assert manifest[SYNAPSE_TABLE]["source"] == "cave" and manifest[SYNAPSE_TABLE]["version"] == VERSION
    for path in Path(tmp_path).rglob("*"):  # the token is nowhere in the cache
        if path.is_file():
            assert MOCK_TOKEN.encode() not in path.read_bytes(), path

    n_before = len(rsps.calls)
    again = pull_column_tables(source(client), cache, progress=False)
    assert len(rsps.calls) == n_before  # second call: no HTTP request at all
    for table in COLUMN_TABLES:
        pd.testing.assert_frame_equal(again[table], tables[table])


# -- issue 12: real-server shapes --------------------------------------------------------------
def test_bool_proofreading_columns_rebuild_from_cache(client, rsps, tmp_path):
    """caveclient >= 8 returns status_* as bool: the second (cached) run must read them back."""
    world = make_world(n_cells=10, n_column=6, n_syn=100)
    proof = world[PROOFREADING_TABLE]
    world[PROOFREADING_TABLE] = proof.assign(status_dendrite=True, status_axon=np.arange(len(proof)) % 2 == 0)
    FakeCave(world).install(rsps)
    cache = TableCache(tmp_path, DATASTACK, VERSION)
    first = pull_column_tables(source(client), cache, progress=False)
    again = pull_column_tables(source(client), cache, progress=False)  # today: CacheError schema mismatch
    pd.testing.assert_frame_equal(again[PROOFREADING_TABLE], first[PROOFREADING_TABLE])
    assert str(again[PROOFREADING_TABLE]["status_axon"].dtype) == "boolean"
    assert again[PROOFREADING_TABLE]["status_dendrite"].all()


TOS_URL = "https://global.daf-apis.com/sticky_auth/api/v1/tos/2/accept"


@pytest.mark.parametrize("error, message, data, expected", [
    ("missing_tos", "Need to accept Terms of Service to access resource.",
     {"tos_id": 2, "tos_name": "MICrONS Public", "tos_form_url": TOS_URL}, TOS_URL),
    ("missing_permission", "Missing permission: view for dataset minnie65_public", {}, "lacks access"),
])
def test_forbidden_keeps_the_reason_and_opens_no_browser(client, rsps, monkeypatch, error, message, data,
                                                         expected):
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url, *a, **k: opened.append(url))
    fake = FakeCave(make_world()).install(rsps)
    body = json.dumps({"error": error, "message": message, "data": data})
    fake.failures = {n: (403, {"Content-Type": "application/json"}, body) for n in range(3)}
    with pytest.raises(SourceError) as err:
        source(client).fetch_table(NUCLEUS_TABLE, progress=False)
    text = str(err.value)
    assert f"HTTP 403, {error}" in text and message in text and expected in text
    assert opened == [] and fake.n_queries == 1
