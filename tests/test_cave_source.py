"""CaveSource against caveclient's own ``CAVEclientMock`` and a fake materialization server.

The fake server (``FakeCave``) answers the real caveclient requests, mocked with ``responses``:
query POSTs with Arrow IPC stream bodies (``Content-Type: data.arrow``, as caveclient's
``deserialize_query_response`` expects), table-metadata and row-count GETs, the server's row cap
with its ``Warning: 201 - "Limited query to N rows`` header, pages in a new order on each request,
and scripted failures (HTTP errors, timeouts, a kill) by query number. Retries are caveclient's
(urllib3's ``Retry``; ``responses`` replays them for HTTP statuses); timeouts are exercised over a
real socket (``serve``). No sleeping: urllib3's waits are recorded instead.
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
import urllib3
import caveclient.base as cave_base
from caveclient import get_session_defaults
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
    DATASTACK, MOCK_TOKEN, VERSION, FakeCave, Hang, Killed, expected_synapses, make_world,
    serve,
)


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """urllib3's waits between retries, recorded instead of slept."""
    waits: list[float] = []
    monkeypatch.setattr(urllib3.util.retry.time, "sleep", waits.append)
    return waits


def mock_client(local_server: str | None = None):
    kw = {"local_server": local_server} if local_server else {}
    return CAVEclientMock(datastack_name=DATASTACK, materialization=True,
                          available_materialization_versions=[VERSION], set_version=VERSION, **kw)


@pytest.fixture
def client():
    return mock_client()


@pytest.fixture
def builds(monkeypatch):
    """The source builds its own client, as it builds a ``CAVEclient`` in use: ``builds(url)``
    makes it a ``CAVEclientMock`` (on the fake server at ``url``, default the mocked one);
    records caveclient's session defaults at the time."""
    seen: list[dict] = []

    def install(local_server: str | None = None) -> list[dict]:
        def build(datastack_name, **kw):
            from caveclient import get_session_defaults

            seen.append(dict(get_session_defaults()))
            return mock_client(local_server)

        monkeypatch.setattr("caveclient.CAVEclient", build)
        return seen

    return install


@pytest.fixture
def sent(monkeypatch) -> list[tuple[str, str, object]]:
    """(method, url, timeout) of every request that reached a ``responses`` mock, those made
    while a client is built included."""
    calls: list[tuple[str, str, object]] = []
    original = responses.RequestsMock._on_request

    def spy(self, adapter, request, **kwargs):
        calls.append((request.method, request.url, kwargs.get("timeout")))
        return original(self, adapter, request, **kwargs)

    monkeypatch.setattr(responses.RequestsMock, "_on_request", spy)
    return calls


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def source(client, **kw) -> CaveSource:
    """A source on ``client``; None: the source builds one itself (see ``builds``)."""
    kw = {"batch_size": 4, "timeout_s": 7.0, "max_retries": 3, "backoff_s": 0.25, **kw}
    if client is None:
        return CaveSource(DATASTACK, VERSION, auth_token=MOCK_TOKEN, **kw)
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


@pytest.mark.parametrize("n_rows, cap", [(10, 5), (6, 6), (11, 4), (40, 3)])
def test_capped_unfiltered_table_is_read_by_id_ranges(client, rsps, n_rows, cap):
    """No filter left to split, and a server that pages in no stable order: id ranges, then the
    server's count, never offset pages (which overlap and lose rows)."""
    world = make_world(n_cells=n_rows)
    fake = FakeCave(world, cap=cap, shuffle=True).install(rsps)
    got = source(client).fetch_table(NUCLEUS_TABLE, progress=False)
    assert got["id"].tolist() == sorted(world[NUCLEUS_TABLE]["id"])   # guards against: rows lost
    assert fake.n_counts == 1
    assert all(q["rows"] <= cap for q in fake.answered)


def test_capped_single_filter_value_is_read_by_id_ranges(client, rsps):
    world = make_world(n_cells=10, n_column=6)
    proof = world[PROOFREADING_TABLE]
    world[PROOFREADING_TABLE] = pd.concat([proof] + [proof.iloc[:1].assign(id=1000 + i) for i in range(12)],
                                          ignore_index=True)   # one root proofread 13 times
    FakeCave(world, cap=5, shuffle=True).install(rsps)
    root = int(proof["pt_root_id"].iloc[0])
    got = source(client).fetch_table(PROOFREADING_TABLE, filter_in={"pt_root_id": [root]}, progress=False)
    assert got["id"].tolist() == [1] + [1000 + i for i in range(12)]


def test_column_pull_from_a_server_that_shuffles_and_ignores_offset(client, rsps, tmp_path):
    """The column table capped, pages in another order each time, offset dropped by a proxy:
    the pull is complete (guards against: cells lost, or a pull that never ends)."""
    world = make_world(n_cells=40, n_column=31, n_syn=150)
    fake = FakeCave(world, cap=7, shuffle=True, ignore_offset=True, max_queries=400).install(rsps)
    tables = pull_column_tables(source(client, batch_size=8), TableCache(tmp_path, DATASTACK, VERSION),
                                progress=False)
    roots = column_roots(world)
    assert sorted(tables[COLUMN_TABLE]["pt_root_id"]) == sorted(roots)
    pd.testing.assert_frame_equal(tables[SYNAPSE_TABLE], expected_synapses(world, roots))
    assert fake.n_queries < 150


def test_a_server_ignoring_the_id_ranges_stops_the_pull_naming_the_table(client, rsps, tmp_path):
    world = make_world(n_cells=30)
    fake = FakeCave(world, cap=4, ignore_ranges=True, ignore_offset=True, max_queries=50).install(rsps)
    cache = TableCache(tmp_path, DATASTACK, VERSION)
    with pytest.raises(SourceError, match=f"{NUCLEUS_TABLE}: .*ignores the id range.*no progress"):
        source(client).fetch_table(NUCLEUS_TABLE, progress=False)   # guards against: RunawayPull
    assert fake.n_queries <= 3
    assert not cache.dir.exists()


def test_a_silent_cap_is_caught_by_the_server_count(client, rsps, tmp_path):
    """No header, no known limit: the truncated table is refused, not cached (guards against: 6 of 10 rows)."""
    world = make_world(n_cells=10)
    FakeCave(world, cap=6, cap_header=False).install(rsps)
    with pytest.raises(SourceError, match=f"{NUCLEUS_TABLE}: the server counts 10 rows .* got 6"):
        source(client).fetch_table(NUCLEUS_TABLE, progress=False)


def test_an_id_served_twice_is_an_error_not_dropped(client, rsps):
    world = make_world(n_cells=8)
    nuc = world[NUCLEUS_TABLE]
    world[NUCLEUS_TABLE] = pd.concat([nuc, nuc.iloc[[3]]], ignore_index=True)
    FakeCave(world).install(rsps)
    with pytest.raises(SourceError, match=f"{NUCLEUS_TABLE}: the server returned id {nuc['id'][3]} twice"):
        source(client).fetch_table(NUCLEUS_TABLE, progress=False)


def test_column_table_exactly_at_the_cap_is_complete(client, rsps, tmp_path):
    world = make_world(n_cells=10, n_column=6, n_syn=100)
    FakeCave(world, cap=6).install(rsps)  # the column table has exactly the cap's rows
    tables = pull_column_tables(source(client, batch_size=2), TableCache(tmp_path, DATASTACK, VERSION),
                                progress=False)
    assert sorted(tables[COLUMN_TABLE]["pt_root_id"]) == sorted(column_roots(world))


# -- retries (caveclient's), timeouts -------------------------------------------------------------
@pytest.mark.parametrize("answer", [
    (503, {"Content-Type": "application/json"}, json.dumps({"message": "overloaded"})),
    (502, {}, "bad gateway"),
    (500, {}, "internal error"),
    (429, {"Retry-After": "3"}, "slow down"),
])
def test_transient_error_then_success(builds, rsps, answer):
    builds()
    world = make_world(n_cells=6, n_column=6)
    roots = column_roots(world)
    fake = FakeCave(world).install(rsps)
    fake.failures[0] = answer
    got = source(None, batch_size=10).fetch_synapses(roots, progress=False)
    assert fake.n_queries == 2
    pd.testing.assert_frame_equal(got, expected_synapses(world, roots))


def test_the_source_builds_its_services_with_caveclients_retries(builds, rsps):
    seen = builds()
    FakeCave(make_world()).install(rsps)
    before = dict(get_session_defaults())
    src = source(None, max_retries=3, backoff_s=0.25)
    src.fetch_table(NUCLEUS_TABLE, progress=False)
    assert seen[0]["max_retries"] == 3 and seen[0]["backoff_factor"] == 0.25
    assert get_session_defaults() == before   # put back after the build
    retry = src._retry()
    assert isinstance(retry, urllib3.util.Retry)
    assert (retry.total, retry.backoff_factor) == (3, 0.25)
    assert set(retry.status_forcelist) == set(cave.RETRY_STATUS) and retry.respect_retry_after_header
    assert retry.is_retry("POST", 503) and not retry.is_retry("POST", 403)


def test_persistent_5xx_is_a_source_error_after_the_retries(builds, rsps):
    builds()
    world = make_world()
    fake = FakeCave(world).install(rsps)
    fake.failures = {n: (503, {}, "down") for n in range(10)}
    with pytest.raises(SourceError, match=r"HTTP 503.*4 attempt") as err:
        source(None, max_retries=3).fetch_synapses(column_roots(world), progress=False)
    assert fake.n_queries == 4
    assert "run the pull again" in str(err.value)


def test_timeouts_and_errors_are_retried_over_a_real_socket(builds, sleeps):
    """A server that does not answer in time, then a 503, then a 429 with Retry-After: urllib3
    retries all three with caveclient's backoff (first retry at once, then 2 x 0.25 s), honours
    Retry-After, and the fourth request gets the rows."""
    world = make_world()
    fake = FakeCave(world)
    fake.failures = {0: Hang(1.0), 1: (503, {}, "down"), 2: (429, {"Retry-After": "2"}, "slow down")}
    with serve(fake) as url:
        builds(url)
        got = source(None, timeout_s=0.3, max_retries=3, backoff_s=0.25).fetch_table(NUCLEUS_TABLE, progress=False)
    assert len(got) == len(world[NUCLEUS_TABLE]) and fake.n_queries == 4
    assert sleeps == [0.5, 2.0]


def test_no_answer_in_time_is_a_source_error_after_the_retries(builds, sleeps):
    world = make_world()
    fake = FakeCave(world)
    fake.failures = {n: Hang(1.0) for n in range(5)}
    with serve(fake) as url:
        builds(url)
        with pytest.raises(SourceError, match=r"no answer within 0.3 s, 3 attempt") as err:
            source(None, timeout_s=0.3, max_retries=2, backoff_s=0.0).fetch_table(NUCLEUS_TABLE, progress=False)
    assert fake.n_queries == 3
    assert "run the pull again" in str(err.value)


def test_every_request_carries_the_timeout_those_building_the_client_included(builds, rsps, sent):
    builds()
    FakeCave(make_world()).install(rsps)
    source(None, timeout_s=7.0).fetch_table(NUCLEUS_TABLE, progress=False)
    building = [c for c in sent if "/query" not in c[1]]
    assert len(building) > 5 and any("versions" in c[1] for c in building)
    assert {t for *_, t in sent} == {7.0}   # guards against: None while the client is built
    assert cave_base.requests is requests   # caveclient's module is left as it was


def test_a_client_passed_in_gets_the_timeout(client, rsps):
    world = make_world(n_cells=23, n_column=23, n_syn=400)
    fake = FakeCave(world).install(rsps)
    source(client, batch_size=5, timeout_s=4.5).fetch_synapses(column_roots(world), progress=False)
    assert fake.timeouts == [4.5] * fake.n_queries


def test_timed_out_reads_the_forms_requests_raises():
    from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, ReadTimeoutError

    read = MaxRetryError(None, "/q", ReadTimeoutError(None, "/q", "read timed out"))
    refused = MaxRetryError(None, "/q", urllib3.exceptions.NewConnectionError(None, "refused"))
    assert cave._timed_out(requests.ConnectionError(read))
    assert cave._timed_out(requests.exceptions.ConnectTimeout(MaxRetryError(None, "/q", ConnectTimeoutError())))
    assert not cave._timed_out(requests.ConnectionError(refused))


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


# -- what a real server returns: typed booleans, its refusals --------------------------------------
def test_bool_proofreading_columns_rebuild_from_cache(client, rsps, tmp_path):
    """caveclient >= 8 returns status_* as bool: the second (cached) run must read them back."""
    world = make_world(n_cells=10, n_column=6, n_syn=100)
    proof = world[PROOFREADING_TABLE]
    world[PROOFREADING_TABLE] = proof.assign(status_dendrite=True, status_axon=np.arange(len(proof)) % 2 == 0)
    FakeCave(world).install(rsps)
    cache = TableCache(tmp_path, DATASTACK, VERSION)
    first = pull_column_tables(source(client), cache, progress=False)
    again = pull_column_tables(source(client), cache, progress=False)  # guards against: CacheError schema mismatch
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
    assert not text.splitlines()[0].endswith("..")   # guards against: "access resource.."
    assert opened == [] and fake.n_queries == 1
