"""A fake CAVE materialization server for tests (``FakeCave``) and the rows it serves.

It answers the real caveclient requests, mocked with ``responses`` (:meth:`FakeCave.install`) or
over a real socket (:func:`serve`, where timeouts are real): query POSTs with Arrow IPC stream
bodies (``Content-Type: data.arrow``, as caveclient's ``deserialize_query_response`` expects),
table-metadata and row-count GETs, the server's row cap with its ``Warning: 201 - "Limited query
to N rows`` header, and scripted failures (HTTP errors, timeouts, a hang, a kill) by query number.
Like the real engine it applies ``offset``/``limit`` with no ORDER BY: ``shuffle`` serves rows in
another order on each request; ``ignore_offset`` and ``ignore_ranges`` imitate a proxy that drops
those parameters. Used by ``test_cave_source.py`` and ``test_column_cave.py``.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import threading
from types import SimpleNamespace
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import responses
from caveclient.tools.testing import TEST_LOCAL_SERVER

from connectomics.schema import (
    CELL_TYPE_TABLE, COLUMN_TABLE, MTYPE_TABLE, NUCLEUS_TABLE, PROOFREADING_TABLE,
    SCHEMAS, SYNAPSE_TABLE,
)

DATASTACK = "test_stack"
VERSION = 1300
MOCK_TOKEN = "just_a_test"  # the token CAVEclientMock builds its client with
MAT = f"{TEST_LOCAL_SERVER}/materialize/api/v3/datastack/{DATASTACK}/version/(?P<version>\\d+)"
QUERY_URL = re.compile(MAT + r"(/table/(?P<table>[^/]+))?/query")
META_URL = re.compile(MAT + r"/table/(?P<table>[^/]+)/metadata")
COUNT_URL = re.compile(f"{TEST_LOCAL_SERVER}/materialize/api/v2/datastack/{DATASTACK}/version/(?P<version>\\d+)"
                       r"/table/(?P<table>[^/]+)/count")
ROOT0 = 864691135_000_000_000


class Killed(BaseException):
    """Stands for the process being killed mid-pull (not an Exception: nothing may swallow it)."""


class Hang:
    """A scripted failure: the server answers only after ``seconds`` (over a socket: a timeout)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class RunawayPull(AssertionError):
    """The client sent more queries than the pull can need: it would never stop."""


def arrow_body(df: pd.DataFrame) -> bytes:
    """``df`` as the Arrow IPC stream the materialization engine sends."""
    sink = pa.BufferOutputStream()
    table = pa.Table.from_pandas(df, preserve_index=False)
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


# -- a small fake MICrONS ----------------------------------------------------------------------
def make_world(n_cells: int = 10, n_column: int = 6, n_syn: int = 300, hub: int | None = None,
               hub_syn: int = 0, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Tables as the server holds them; reference tables already joined to the nucleus table the
    way the server joins them (clashing columns of the reference side suffixed ``_ref``).

    Cells ``0..n_column-1`` form the column. Synapses join random cells (autapses included); cell
    ``hub`` (if given) also sends ``hub_syn`` synapses to the other column cells.
    """
    rng = np.random.default_rng(seed)
    nuc_id = np.arange(n_cells, dtype=np.int64) + 7000
    roots = np.arange(n_cells, dtype=np.int64) + ROOT0
    pos = rng.uniform(0, 1e6, size=(n_cells, 3))
    nucleus = pd.DataFrame({
        "id": nuc_id, "created": "2023-01-01", "valid": True, "volume": rng.uniform(100, 400, n_cells),
        "pt_supervoxel_id": roots + 11, "pt_root_id": roots,
        "pt_position_x": pos[:, 0], "pt_position_y": pos[:, 1], "pt_position_z": pos[:, 2],
        "bb_start_position_x": pos[:, 0] - 5, "bb_start_position_y": pos[:, 1] - 5,
        "bb_start_position_z": pos[:, 2] - 5,
    })

    def reference(cells: np.ndarray, system: str, labels: list[str], first_id: int) -> pd.DataFrame:
        ref = nucleus.iloc[cells].rename(columns={"id": "id_ref", "created": "created_ref",
                                                  "valid": "valid_ref"})
        own = pd.DataFrame({
            "id": np.arange(len(cells), dtype=np.int64) + first_id, "created": "2023-06-01",
            "valid": True, "target_id": nuc_id[cells], "classification_system": system,
            "cell_type": [labels[i % len(labels)] for i in range(len(cells))],
        })
        return pd.concat([own, ref.reset_index(drop=True)], axis=1)

    all_cells = np.arange(n_cells)
    column_cells = np.arange(n_column)
    proof = pd.DataFrame({
        "id": np.arange(n_cells, dtype=np.int64) + 1, "created": "2023-03-01", "valid": True,
        "pt_supervoxel_id": roots + 11, "pt_root_id": roots, "valid_id": roots,
        "status_dendrite": "extended", "status_axon": ["extended" if i % 2 else "clean" for i in all_cells],
        "pt_position_x": pos[:, 0], "pt_position_y": pos[:, 1], "pt_position_z": pos[:, 2],
        "strategy_dendrite": "dendrite_extended", "strategy_axon": "axon_partially_extended",
    })
    pre = rng.integers(0, n_cells, n_syn)
    post = rng.integers(0, n_cells, n_syn)
    if hub is not None:
        others = np.setdiff1d(column_cells, [hub])
        pre = np.concatenate([pre, np.full(hub_syn, hub)])
        post = np.concatenate([post, others[np.arange(hub_syn) % len(others)]])
    n = len(pre)
    ctr = rng.uniform(0, 1e6, size=(n, 3))
    synapses = pd.DataFrame({
        "id": rng.permutation(n).astype(np.int64) * 3 + 100, "created": "2022-01-01", "valid": True,
        "size": rng.integers(50, 5000, n).astype(np.int64),
        "pre_pt_supervoxel_id": roots[pre] + 11, "pre_pt_root_id": roots[pre],
        "post_pt_supervoxel_id": roots[post] + 11, "post_pt_root_id": roots[post],
        "ctr_pt_position_x": ctr[:, 0], "ctr_pt_position_y": ctr[:, 1], "ctr_pt_position_z": ctr[:, 2],
        "pre_pt_position_x": ctr[:, 0] - 10, "pre_pt_position_y": ctr[:, 1], "pre_pt_position_z": ctr[:, 2],
    })
    return {
        NUCLEUS_TABLE: nucleus,
        COLUMN_TABLE: reference(column_cells, "aibs_coarse_excitatory", ["23P", "4P", "BC"], 1),
        MTYPE_TABLE: reference(all_cells, "aibs_mtype", ["L2a", "L4b", "PTC"], 100),
        CELL_TYPE_TABLE: reference(all_cells, "aibs_neuronal_fine_type", ["L2-3 IT", "L4 IT"], 200),
        PROOFREADING_TABLE: proof,
        SYNAPSE_TABLE: synapses,
    }


REFERENCE_TABLES = {COLUMN_TABLE, MTYPE_TABLE, CELL_TYPE_TABLE}


def expected_synapses(world: dict[str, pd.DataFrame], roots: np.ndarray) -> pd.DataFrame:
    s = world[SYNAPSE_TABLE]
    keep = s.pre_pt_root_id.isin(roots) & s.post_pt_root_id.isin(roots) & (s.pre_pt_root_id != s.post_pt_root_id)
    cols = list(SCHEMAS[SYNAPSE_TABLE])
    out = s.loc[keep, cols].sort_values("id").reset_index(drop=True)
    return out.astype(SCHEMAS[SYNAPSE_TABLE])


#: filter dict of the query body -> the comparison it asks for
RANGE_FILTERS = {"filter_greater_dict": "gt", "filter_less_dict": "lt",
                 "filter_greater_equal_dict": "ge", "filter_less_equal_dict": "le"}


class FakeCave:
    """A materialization engine over ``world``: filters, row cap, scripted failures.

    ``failures[n]`` (n counts query POSTs from 0) is an exception to raise, a :class:`Hang`, or a
    ``(status, headers, body)`` to answer instead of the data. ``shuffle``: rows come back in a
    new order on each request (the engine has no ORDER BY), before ``offset``/``limit`` and the
    cap are applied. ``ignore_offset`` / ``ignore_ranges``: ``offset`` / the greater/less filters
    are dropped, as by a proxy. More than ``max_queries`` queries raise :class:`RunawayPull`.
    """

    def __init__(self, world: dict[str, pd.DataFrame], cap: int | None = None,
                 cap_header: bool = True, shuffle: bool = False, ignore_offset: bool = False,
                 ignore_ranges: bool = False, max_queries: int = 2000, seed: int = 0) -> None:
        self.world = world
        self.cap = cap
        self.cap_header = cap_header
        self.shuffle = shuffle
        self.ignore_offset = ignore_offset
        self.ignore_ranges = ignore_ranges
        self.max_queries = max_queries
        self.rng = np.random.default_rng(seed)
        self.failures: dict[int, object] = {}
        self.n_queries = 0
        self.n_counts = 0
        self.answered: list[dict] = []  # queries answered with data
        self.timeouts: list[object] = []  # the timeout each query request carried

    def install(self, rsps: responses.RequestsMock) -> "FakeCave":
        rsps.add_callback(responses.POST, QUERY_URL, callback=self.on_query)
        rsps.add_callback(responses.GET, META_URL, callback=self.on_metadata)
        rsps.add_callback(responses.GET, COUNT_URL, callback=self.on_count)
        return self

    def on_metadata(self, request) -> tuple[int, dict, str]:
        table = META_URL.match(request.url).group("table")
        md = {"table_name": table, "schema_type": "cell_type_reference" if table in REFERENCE_TABLES else "x",
              "reference_table": NUCLEUS_TABLE if table in REFERENCE_TABLES else None,
              "voxel_resolution_x": 4.0, "voxel_resolution_y": 4.0, "voxel_resolution_z": 40.0}
        return 200, {"Content-Type": "application/json"}, json.dumps(md)

    def on_count(self, request) -> tuple[int, dict, str]:
        self.n_counts += 1
        table = COUNT_URL.match(request.url).group("table")
        return 200, {"Content-Type": "application/json"}, json.dumps(len(self.world[table]))

    def on_query(self, request) -> tuple[int, dict, bytes]:
        n = self.n_queries
        self.n_queries += 1
        if self.n_queries > self.max_queries:
            raise RunawayPull(f"{self.n_queries} queries: the pull makes no progress")
        self.timeouts.append(request.req_kwargs.get("timeout"))
        failure = self.failures.get(n)
        if isinstance(failure, BaseException):
            raise failure
        if isinstance(failure, Hang):
            threading.Event().wait(failure.seconds)
        elif failure is not None:
            return failure
        m = QUERY_URL.match(request.url)
        body = json.loads(request.body)
        table = m.group("table") or body["tables"][0][0]
        assert int(m.group("version")) == VERSION
        assert body["desired_resolution"] == [1, 1, 1]
        assert "split_positions=True" in request.url
        df = self.world[table]
        for col, vals in (body.get("filter_in_dict") or {}).get(table, {}).items():
            df = df[df[col].isin(vals)]
        for col, val in (body.get("filter_equal_dict") or {}).get(table, {}).items():
            df = df[df[col] == val]
        for key, op in RANGE_FILTERS.items():
            for col, val in (body.get(key) or {}).get(table, {}).items():
                if not self.ignore_ranges:
                    df = df[getattr(df[col], op)(val)]
        if self.shuffle:
            df = df.iloc[self.rng.permutation(len(df))]
        offset = 0 if self.ignore_offset else int(body.get("offset") or 0)
        limit = body.get("limit")
        df = df.iloc[offset: None if limit is None else offset + int(limit)]
        headers = {"Content-Type": "data.arrow", "dataframe_resolution": "1, 1, 1"}
        if self.cap is not None and len(df) >= self.cap:  # the engine: `if len(df) == limit`
            df = df.iloc[: self.cap]
            if self.cap_header:
                headers["Warning"] = f'201 - "Limited query to {self.cap} rows'
        self.answered.append({"table": table, "filters": body.get("filter_in_dict"), "rows": len(df),
                              "ids": df["id"].tolist()})
        return 200, headers, arrow_body(df.reset_index(drop=True))


@contextlib.contextmanager
def serve(fake: FakeCave) -> Iterator[str]:
    """``fake`` on a real HTTP server at 127.0.0.1 (yields its address, e.g. for
    ``CAVEclientMock(local_server=...)``): requests really time out against a :class:`Hang`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, route) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = SimpleNamespace(url=TEST_LOCAL_SERVER + self.path, req_kwargs={},
                                      body=self.rfile.read(length) if length else None)
            status, headers, body = route(request)
            data = body.encode() if isinstance(body, str) else body
            try:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up waiting (its timeout) and closed the connection
                pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self._answer(fake.on_query)

        def do_GET(self) -> None:  # noqa: N802
            url = TEST_LOCAL_SERVER + self.path.split("?")[0]
            self._answer(fake.on_count if COUNT_URL.match(url) else fake.on_metadata)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
