"""The ``cave`` source: tables from a CAVE materialization server at a pinned version.

Everything goes through caveclient's own API (``client.materialize.query_table`` and
``client.materialize.synapse_query``, positions split into ``_x/_y/_z`` at
``desired_resolution=[1, 1, 1]``, i.e. nanometres). What this module adds around it:

* **Batching.** Synapses are pulled pre-synaptic root-id batch by batch (``batch_size`` ids each,
  against all post-synaptic root ids); long ``filter_in`` lists of :meth:`CaveSource.fetch_table`
  are cut into batches of ``batch_size`` values. Each finished synapse batch goes to a
  :class:`~connectomics.cache.PartStore` and is skipped on the next run, so a pull killed half-way
  resumes with no row lost or duplicated.
* **Capped queries.** The materialization engine silently truncates a query at its configured
  row limit (200k-500k rows, ``QUERY_LIMIT_SIZE``) when ``len(result) == limit``. The only sign
  is an HTTP response header ``Warning: 201 - "Limited query to <limit> rows``, which caveclient
  merely passes to ``logging.getLogger("caveclient.base").warning`` (no ``warnings.warn``, no
  exception). This module reads that header on every response through a ``requests`` response
  hook, learns the limit from it, also treats a result of ``row_limit`` or more rows as capped,
  and splits a capped query (halves the pre-synaptic ids; a single pre id that is still capped
  has its post-synaptic ids halved) until no part is capped. A capped table query with no filter
  list left to split is read in pages of ``row_limit`` rows (``offset``/``limit``).
* **Timeouts and retries.** caveclient sets no request timeout. Every request sent through the
  client's sessions gets ``timeout_s`` (a mounted :class:`requests.adapters.HTTPAdapter`); the
  requests caveclient makes while it is being built get it through a scoped default. A query
  answered with HTTP 429/5xx, a timeout or a dropped connection is retried ``max_retries``
  times with exponential backoff (``backoff_s * 2**attempt`` seconds, or the server's
  ``Retry-After``), then fails as a :class:`SourceError`.
* **Tokens.** A missing or rejected (401/403) token is a :class:`SourceError` that says how to set
  one up; a 403 that gives a reason (``missing_tos``, ``missing_permission``) keeps the server's
  message and the Terms-of-Service link. caveclient opens that link in a web browser on
  ``missing_tos``; this source never lets it (:func:`_no_browser`). The token is held in memory only: it is never logged, written to the cache or the
  manifest, put in an error message, or shown by :meth:`CaveSource.describe` / ``repr``.

Token lookup order: ``auth_token`` argument, ``auth_token_file`` (a caveclient JSON secret file
``{"token": ...}`` or a plain text file), the ``CAVE_TOKEN`` environment variable, then
caveclient's own saved secret (``caveclient setup-token`` / ``client.auth.save_token``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

import numpy as np
import pandas as pd
import requests
from requests.adapters import HTTPAdapter
from tqdm.auto import tqdm

from ..cache import PartStore
from ..schema import SCHEMAS, SYNAPSE_TABLE, conform, empty
from .base import Source, SourceError

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_DATASTACK = "minnie65_public"
DEFAULT_VERSION = 1300
#: Environment variable read for the CAVE token when none is passed.
TOKEN_ENV = "CAVE_TOKEN"
#: Positions come back in nanometres.
RESOLUTION_NM = [1, 1, 1]
#: HTTP statuses worth retrying (rate limited, server or gateway trouble).
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
#: Longest ``Retry-After`` honoured, seconds.
MAX_RETRY_AFTER_S = 120.0
#: The materialization engine's truncation notice (response header ``Warning``).
LIMITED_QUERY = re.compile(r"Limited query to (\d+) rows")
#: Suffixes caveclient asks the server to give the joined reference table's clashing columns
#: (API v3: ``{table: "", reference: "_ref"}``; API v2: ``["", "ref"]``).
REFERENCE_SUFFIXES = ("_ref", "ref")
#: Logger caveclient writes response ``Warning`` headers to.
CAVECLIENT_WARNING_LOGGER = "caveclient.base"

#: Canonical columns some real CAVE tables lack, and what stands in for them (logged when used):
#: ``volume`` (nucleus tables, um^3): 0.0, meaning "not measured" (NaN is refused by the schema);
#: ``valid_id`` (proofreading): the row's own ``pt_root_id``, the root id that was proofread;
#: ``status_*`` / ``strategy_*`` (proofreading tables from before strategies were recorded): None.
FILLS: dict[str, Callable[[pd.DataFrame], Any]] = {
    "volume": lambda df: 0.0,
    "valid_id": lambda df: df["pt_root_id"],
    "status_dendrite": lambda df: None,
    "status_axon": lambda df: None,
    "strategy_dendrite": lambda df: None,
    "strategy_axon": lambda df: None,
}

#: Replaced by the tests; every backoff wait goes through it.
_sleep: Callable[[float], None] = time.sleep


def _token_help(server: str) -> str:
    return (
        "Set up a CAVE token (free; log in with a Google account) in one of these ways:\n"
        f"  - run `caveclient setup-token {server}` once (saves it where caveclient finds it), or in\n"
        f"    Python: CAVEclient(server_address={server!r}).auth.save_token(token=...)\n"
        f"  - export {TOKEN_ENV}=<token> in the environment\n"
        "  - pass --token-file <file> (a text file with the token, or caveclient's JSON secret)\n"
        f"Tokens are listed (and can be created) at {_token_page(server)}"
    )


def _token_page(server: str) -> str:
    """caveclient's own URL of the token page of ``server``."""
    from caveclient.endpoints import auth_endpoints_v1

    return auth_endpoints_v1["user_tokens_page"].format_map({"auth_server_address": server})


def _short(exc: BaseException, n: int = 300) -> str:
    text = str(exc)
    return text if len(text) <= n else text[:n] + "..."


def _retry_after(response: requests.Response | None) -> float | None:
    """The server's ``Retry-After`` in seconds (numeric form only), capped; None if absent."""
    if response is None:
        return None
    value = response.headers.get("Retry-After")
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S) if value is not None else None
    except ValueError:
        return None


class _TimeoutAdapter(HTTPAdapter):
    """An adapter that gives every request a timeout of ``timeout_s`` seconds (unless its caller
    set one) and does no urllib3-level retries: :class:`CaveSource` retries whole queries."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(max_retries=0)
        self.timeout_s = timeout_s

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        return super().send(
            request, stream=stream, timeout=self.timeout_s if timeout is None else timeout,
            verify=verify, cert=cert, proxies=proxies,
        )


@contextlib.contextmanager
def _default_timeout(timeout_s: float) -> Iterator[None]:
    """Give every ``requests`` call made inside this block a timeout of ``timeout_s`` seconds.

    Used only while a ``CAVEclient`` is being built: its constructor makes requests (info
    service, API and server versions, materialization versions) through sessions and plain
    ``requests.get`` calls that nothing outside can reach, all without a timeout. Process-wide
    for the duration of the block; requests that set their own timeout keep it.
    """
    original = requests.Session.request

    def request(self, method, url, *args, **kwargs):
        if len(args) < 7 and kwargs.get("timeout") is None:  # timeout: 7th positional after url
            kwargs["timeout"] = timeout_s
        return original(self, method, url, *args, **kwargs)

    requests.Session.request = request
    try:
        yield
    finally:
        requests.Session.request = original


class _NoBrowser:
    """Stands in for the ``webbrowser`` module inside ``caveclient.base``, which opens the Terms of
    Service form in a browser when a server answers 403 ``missing_tos``. Records the URLs."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def open(self, url: str, *args: Any, **kwargs: Any) -> bool:
        self.urls.append(url)
        return False

    open_new = open_new_tab = open


@contextlib.contextmanager
def _no_browser() -> Iterator[_NoBrowser]:
    """While inside, caveclient cannot open a web browser (see :class:`_NoBrowser`)."""
    import caveclient.base as cave_base

    original = getattr(cave_base, "webbrowser", None)
    stub = _NoBrowser()
    cave_base.webbrowser = stub
    try:
        yield stub
    finally:
        cave_base.webbrowser = original


def _forbidden_reason(response: requests.Response | None) -> tuple[str, str, str | None] | None:
    """``(error, message, tos_url)`` of a CAVE auth 403 JSON body
    (``{"error": "missing_tos", "message": ..., "data": {"tos_form_url": ...}}``), else None."""
    if response is None:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or not body.get("error"):
        return None
    data = body.get("data") if isinstance(body.get("data"), dict) else {}
    return str(body["error"]), str(body.get("message") or ""), data.get("tos_form_url")


class _DropLimitedQuery(logging.Filter):
    """Drops caveclient's log line for the 'Limited query' header while this source handles it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Limited query" not in record.getMessage()


@contextlib.contextmanager
def _quiet_limited_query_logs() -> Iterator[None]:
    log = logging.getLogger(CAVECLIENT_WARNING_LOGGER)
    flt = _DropLimitedQuery()
    log.addFilter(flt)
    try:
        yield
    finally:
        log.removeFilter(flt)


def _ids(values: Sequence | np.ndarray) -> list:
    """Unique filter values, sorted, as plain Python scalars (JSON-serialisable)."""
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values)
    if arr.dtype.kind in "iub":
        return np.unique(arr.astype(np.int64)).tolist()
    return sorted({v.item() if isinstance(v, np.generic) else v for v in arr.tolist()}, key=str)


class CaveSource(Source):
    """CAVE tables of ``datastack`` at materialization ``version``, in the canonical schemas.

    Parameters
    ----------
    datastack, version
        The datastack (``minnie65_public``) and the pinned materialization version; every query
        names the version explicitly.
    auth_token, auth_token_file
        The CAVE token, or a file holding it; see the module docstring for the lookup order.
    server_address
        The global CAVE server; None is caveclient's default (``https://global.daf-apis.com``).
    batch_size
        Pre-synaptic root ids per synapse query, and values per ``filter_in`` query.
    timeout_s
        Seconds each HTTP request may take (connect and read).
    max_retries, backoff_s
        Retries of a query after HTTP 429/5xx, a timeout or a dropped connection, waiting
        ``backoff_s * 2**attempt`` seconds (or the server's ``Retry-After``) in between.
    row_limit
        The server's row cap if known in advance; a result with this many rows is treated as
        capped even without the ``Limited query`` header. Learned from the header otherwise.
    client
        A ready ``CAVEclient`` (e.g. ``caveclient.tools.testing.CAVEclientMock``); built lazily
        from the arguments above, on the first query, when None.
    """

    kind = "cave"
    provenance = "pulled from CAVE"

    def __init__(
        self,
        datastack: str = DEFAULT_DATASTACK,
        version: int = DEFAULT_VERSION,
        *,
        auth_token: str | None = None,
        auth_token_file: str | os.PathLike | None = None,
        server_address: str | None = None,
        batch_size: int = 500,
        timeout_s: float = 60.0,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        row_limit: int | None = None,
        client: Any | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if client is not None:
            name = getattr(client, "datastack_name", datastack)
            if name != datastack:
                raise ValueError(f"client is for datastack {name!r}, not {datastack!r}")
        self.namespace = datastack
        self.version = int(version)
        self.server_address = server_address
        self.batch_size = int(batch_size)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.row_limit = row_limit
        self._token = auth_token
        self._token_file = Path(auth_token_file).expanduser() if auth_token_file else None
        self._client = client
        self._mat: Any | None = None
        self._warnings: list[str] = []

    # -- what the manifest sees -----------------------------------------------------------------
    def describe(self) -> dict:
        """Source, datastack, version and server address (never the token)."""
        return {**super().describe(), "server_address": self.server_address or "caveclient default"}

    def __repr__(self) -> str:
        return (
            f"CaveSource(datastack={self.namespace!r}, version={self.version}, "
            f"server_address={self.server_address!r}, batch_size={self.batch_size})"
        )

    # -- connection -----------------------------------------------------------------------------
    @property
    def _server(self) -> str:
        """The global server tokens belong to: the argument, the injected client's, or the default."""
        from caveclient.endpoints import default_global_server_address

        server = self.server_address or getattr(self._client, "server_address", None)
        return (server or default_global_server_address).rstrip("/")

    def _scrub(self, text: str) -> str:
        """``text`` with the token (if any is known) masked."""
        return text.replace(self._token, "***") if self._token else text

    def _resolve_token(self) -> str | None:
        """The token, from the argument, the token file, ``$CAVE_TOKEN`` or caveclient's secret."""
        if self._token:
            return self._token
        if self._token_file is not None:
            try:
                text = self._token_file.read_text().strip()
            except OSError as e:
                raise SourceError(
                    f"cannot read the CAVE token file {self._token_file} ({e.strerror}).\n"
                    + _token_help(self._server)
                ) from None
            token: Any = text
            if text.startswith("{"):  # caveclient's secret file: {"token": "..."}
                try:
                    token = json.loads(text).get("token")
                except (json.JSONDecodeError, AttributeError):
                    token = None
            if not token:
                raise SourceError(
                    f"the CAVE token file {self._token_file} holds no token.\n" + _token_help(self._server)
                )
            return str(token).strip()
        env = os.environ.get(TOKEN_ENV, "").strip()
        if env:
            return env
        from caveclient.auth import AuthClient

        return AuthClient(server_address=self._server).token

    def _connect(self) -> Any:
        """Build the ``CAVEclient`` (first query only)."""
        token = self._resolve_token()
        if not token:
            raise SourceError(
                f"no CAVE auth token found for datastack {self.namespace!r}.\n" + _token_help(self._server)
            )
        self._token = token
        from caveclient import CAVEclient

        def build() -> Any:
            with _default_timeout(self.timeout_s):
                return CAVEclient(
                    self.namespace, server_address=self.server_address, auth_token=token,
                    version=self.version,
                )

        try:
            return self._with_retries(f"connecting to CAVE datastack {self.namespace!r}", build)
        except ValueError as e:  # e.g. "Version 1300 is not available for this datastack."
            raise SourceError(
                f"CAVE datastack {self.namespace!r} at version {self.version}: {self._scrub(_short(e))}"
            ) from None

    def _materialize(self) -> Any:
        """The materialization client, its sessions fitted with the timeout and the header hook."""
        if self._mat is not None:
            return self._mat
        if self._client is None:
            self._client = self._connect()
        elif not self._token:
            with contextlib.suppress(Exception):
                self._token = self._client.auth.token  # only to mask it in messages

        def get() -> tuple[Any, Any]:
            with _default_timeout(self.timeout_s):
                return self._client.info, self._client.materialize

        info, mat = self._with_retries(f"connecting to CAVE datastack {self.namespace!r}", get)
        for sub in (info, mat):
            session = getattr(sub, "session", None)
            if isinstance(session, requests.Session):
                adapter = _TimeoutAdapter(self.timeout_s)
                session.mount("https://", adapter)
                session.mount("http://", adapter)
                if self._on_response not in session.hooks["response"]:
                    session.hooks["response"].append(self._on_response)
        self._mat = mat
        return mat

    def _on_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """``requests`` response hook: keep the ``Warning`` header (where the row cap shows)."""
        warning = response.headers.get("Warning")
        if warning:
            self._warnings.append(warning)

    # -- one query, with retries and cap detection ----------------------------------------------
    def _with_retries(self, what: str, call: Callable[[], T]) -> T:
        """``call()``, retried on HTTP 429/5xx, timeouts and dropped connections."""
        from caveclient.base import AuthException

        attempts = self.max_retries + 1
        failure = ""
        for attempt in range(attempts):
            wait: float | None = None
            try:
                with _no_browser():
                    return call()
            except requests.HTTPError as e:
                status = e.response.status_code if e.response is not None else None
                reason = _forbidden_reason(e.response) if status == 403 else None
                if reason is not None:
                    raise SourceError(self._forbidden_message(what, *reason)) from None
                if status in (401, 403):
                    raise SourceError(
                        f"{what}: the CAVE server rejected the auth token (HTTP {status}); it is "
                        "missing, expired, or lacks access to this datastack (new users must also "
                        "accept the dataset's terms of service).\n" + _token_help(self._server)
                    ) from None
                if status not in RETRY_STATUS:
                    raise SourceError(f"{what}: {self._scrub(_short(e))}") from None
                failure = f"HTTP {status} from the server"
                wait = _retry_after(e.response)
            except requests.Timeout:
                failure = f"no answer within {self.timeout_s:g} s"
            except requests.ConnectionError as e:
                failure = f"connection failed ({self._scrub(_short(e, 200))})"
            except AuthException:
                raise SourceError(
                    f"{what}: the CAVE server redirected to a login page: no valid token.\n"
                    + _token_help(self._server)
                ) from None
            except ValueError as e:
                if "Unknown response type" not in str(e):  # caveclient's deserializer
                    raise
                raise SourceError(
                    f"{what}: the server answered with something other than a table "
                    f"({self._scrub(_short(e, 120))}), typically a login page after a redirect: "
                    "the token is missing or invalid.\n" + _token_help(self._server)
                ) from None
            if attempt + 1 < attempts:
                delay = self.backoff_s * 2**attempt if wait is None else wait
                logger.info("%s: %s; retry %d/%d in %.3g s", what, failure, attempt + 1,
                            self.max_retries, delay)
                _sleep(delay)
        raise SourceError(
            f"{what}: {failure}, {attempts} attempt(s) in all (timeout {self.timeout_s:g} s per "
            f"request, {self.max_retries} retries with backoff from {self.backoff_s:g} s). The "
            "server may be down or overloaded: run the pull again later; finished batches are kept."
        )

    def _forbidden_message(self, what: str, error: str, message: str, tos_url: str | None) -> str:
        """The one error of a 403 with a reason: the server's words, the Terms-of-Service link."""
        text = f"{what}: the CAVE server refused access (HTTP 403, {error})"
        if message:
            text += f": {self._scrub(_short(message))}"
        if tos_url:
            return (f"{text}.\nAccept the dataset's Terms of Service at {tos_url} (logged in with "
                    "the account of your token), then run again.")
        if error == "missing_permission":
            return (f"{text}.\nYour token's account lacks access to datastack {self.namespace!r}; "
                    "ask the dataset's maintainers for it, or use another token.\n" + _token_help(self._server))
        return f"{text}.\n" + _token_help(self._server)

    def _query(self, what: str, call: Callable[[], pd.DataFrame]) -> tuple[pd.DataFrame, bool]:
        """``call()`` with retries; also whether the server capped its result."""

        def once() -> tuple[pd.DataFrame, list[str]]:
            self._warnings.clear()
            with _quiet_limited_query_logs():
                df = call()
            return df, list(self._warnings)

        df, warnings = self._with_retries(what, once)
        capped = False
        for w in warnings:
            if "Limited query" in w:
                capped = True
                m = LIMITED_QUERY.search(w)
                if m:
                    self.row_limit = int(m.group(1))
        if self.row_limit is not None and len(df) >= self.row_limit:
            capped = True
        if capped:
            logger.info("%s: capped by the server at %s rows; splitting", what, self.row_limit)
        return df, capped

    # -- tables ---------------------------------------------------------------------------------
    def fetch_table(
        self, table: str, *, filter_in: Mapping[str, Sequence] | None = None, progress: bool = True
    ) -> pd.DataFrame:
        """Rows of ``table`` (whole, or whose ``column`` is in ``filter_in[column]``), canonical.

        Reference tables (cell types, m-types, column membership) are joined to the table they
        annotate by caveclient (``merge_reference=True``), which brings their ``pt_root_id`` and
        ``pt_position_*``. The longest ``filter_in`` list is queried ``batch_size`` values at a
        time. Rows are deduplicated on ``id`` and sorted by it; positions are in nm.
        """
        if table not in SCHEMAS:
            raise ValueError(f"unknown table {table!r}; known: {sorted(SCHEMAS)}")
        filters = {col: _ids(vals) for col, vals in (filter_in or {}).items()}
        if any(len(v) == 0 for v in filters.values()):
            return empty(table)
        if filters:
            key = max(filters, key=lambda c: len(filters[c]))
            values = filters[key]
            chunks = [{**filters, key: values[i:i + self.batch_size]}
                      for i in range(0, len(values), self.batch_size)]
        else:
            key, chunks = None, [None]
        frames: list[pd.DataFrame] = []
        for flt in tqdm(chunks, desc=table, unit="batch", disable=not progress, leave=False):
            frames.extend(self._table_rows(table, flt, key))
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        df = _canonical_table(df, table)
        df = conform(df, table, origin=f"CAVE {self.namespace} v{self.version} {table}")
        return df.drop_duplicates("id").sort_values("id", kind="stable").reset_index(drop=True)

    def _table_rows(self, table: str, flt: dict | None, key: str | None) -> list[pd.DataFrame]:
        """One filtered query of ``table``; halves ``flt[key]`` while the server caps it."""
        mat = self._materialize()
        n = len(flt[key]) if flt else 0
        what = f"{table}" + (f" ({n} {key} values)" if flt else "")
        df, capped = self._query(what, lambda: mat.query_table(
            table, filter_in_dict=flt, split_positions=True, desired_resolution=RESOLUTION_NM,
            materialization_version=self.version, metadata=False,
        ))
        if not capped:
            return [df]
        if not flt or n < 2:
            return self._pages(table, flt, what, df)
        half = n // 2
        return (self._table_rows(table, {**flt, key: flt[key][:half]}, key)
                + self._table_rows(table, {**flt, key: flt[key][half:]}, key))

    def _pages(self, table: str, flt: dict | None, what: str, first: pd.DataFrame) -> list[pd.DataFrame]:
        """A capped query no filter can split, read on in pages of the cap by ``offset``/``limit``
        until a page comes back short (``first`` is the capped answer, page 0)."""
        mat = self._materialize()
        limit = int(self.row_limit or len(first))
        if limit < 1:
            raise SourceError(f"{what}: the server capped the result at {limit} rows; cannot page")
        frames, offset, page = [first], len(first), first
        while len(page) >= limit:
            page, _ = self._query(f"{what} (rows {offset}+)", lambda off=offset: mat.query_table(
                table, filter_in_dict=flt, split_positions=True, desired_resolution=RESOLUTION_NM,
                materialization_version=self.version, metadata=False, offset=off, limit=limit,
            ))
            frames.append(page)
            offset += len(page)
        logger.info("%s: read in %d pages of %d rows", what, len(frames), limit)
        return frames

    # -- synapses -------------------------------------------------------------------------------
    def fetch_synapses(
        self, root_ids: np.ndarray, *, parts: PartStore | None = None, progress: bool = True
    ) -> pd.DataFrame:
        """Synapses between ``root_ids`` (both ends in the set; autapses dropped), by id.

        ``root_ids`` (any order, duplicates ignored) are cut into pre-synaptic batches of
        ``batch_size``; each batch is one ``synapse_query(pre_ids=batch, post_ids=root_ids)``
        (split further while the server caps it) and, once done, one part of ``parts`` under a key
        ``<fingerprint>-<batch number>`` that sorts in batch order. The fingerprint covers the
        datastack, version, batch size and root ids, so parts of a different pull are never mixed
        in. Returns the ``synapses_pni_2`` schema: ``size`` in voxels, ``ctr_pt_position_*`` in nm.
        """
        roots = np.unique(np.asarray(root_ids, dtype=np.int64))
        if roots.size == 0:
            return empty(SYNAPSE_TABLE)
        batches = [roots[i:i + self.batch_size] for i in range(0, roots.size, self.batch_size)]
        prefix = self._fingerprint(roots)
        width = max(5, len(str(len(batches) - 1)))
        post = roots.tolist()
        frames: list[pd.DataFrame] = []
        for i, pre in enumerate(tqdm(batches, desc=SYNAPSE_TABLE, unit="batch", disable=not progress)):
            key = f"{prefix}-{i:0{width}d}"
            if parts is not None and parts.done(key):
                frames.append(parts.read(key))
                continue
            got = self._synapses_between(pre.tolist(), post, f"synapses batch {i + 1}/{len(batches)}")
            batch = _canonical_synapses(got)
            if parts is not None:
                parts.write(key, batch)
            frames.append(batch)
        df = pd.concat(frames, ignore_index=True)
        df = df.drop_duplicates("id").sort_values("id", kind="stable").reset_index(drop=True)
        return conform(df, SYNAPSE_TABLE, origin=f"CAVE {self.namespace} v{self.version} {SYNAPSE_TABLE}")

    def _fingerprint(self, roots: np.ndarray) -> str:
        h = hashlib.sha256(f"{self.namespace}|{self.version}|{self.batch_size}|".encode())
        h.update(roots.astype("<i8").tobytes())
        return h.hexdigest()[:10]

    def _synapses_between(self, pre: list[int], post: list[int], what: str) -> list[pd.DataFrame]:
        """Synapses from ``pre`` to ``post`` (raw columns), split until the server caps none."""
        mat = self._materialize()
        df, capped = self._query(f"{what} ({len(pre)} pre x {len(post)} post ids)", lambda: (
            mat.synapse_query(
                pre_ids=pre, post_ids=post, split_positions=True, desired_resolution=RESOLUTION_NM,
                materialization_version=self.version, synapse_table=SYNAPSE_TABLE,
                remove_autapses=False, metadata=False,
            )
        ))
        if not capped:
            return [df]
        if len(pre) > 1:
            h = len(pre) // 2
            return self._synapses_between(pre[:h], post, what) + self._synapses_between(pre[h:], post, what)
        if len(post) > 1:
            h = len(post) // 2
            return self._synapses_between(pre, post[:h], what) + self._synapses_between(pre, post[h:], what)
        raise SourceError(
            f"{what}: root {pre[0]} -> {post[0]} alone reaches the server's row cap "
            f"({self.row_limit}); cannot split further"
        )


def _canonical_table(df: pd.DataFrame, table: str) -> pd.DataFrame:
    """Name and derive the canonical columns of ``table`` from what the server returned.

    Takes a column missing under its own name from the joined reference table
    (:data:`REFERENCE_SUFFIXES`), else from :data:`FILLS` (logged); extra columns are kept for
    :func:`conform` to drop. A column that is still missing makes :func:`conform` raise.
    """
    df = df.copy()
    for col in SCHEMAS[table]:
        if col in df.columns:
            continue
        alt = next((col + s for s in REFERENCE_SUFFIXES if col + s in df.columns), None)
        if alt is not None:
            df[col] = df[alt]
        elif col in FILLS and (col != "valid_id" or "pt_root_id" in df.columns):
            logger.warning("%s has no %r column; filled as documented in cave.FILLS", table, col)
            df[col] = FILLS[col](df)
    return df


def _canonical_synapses(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One batch's synapse frames, autapses dropped, in the canonical schema."""
    df = pd.concat(frames, ignore_index=True) if frames else empty(SYNAPSE_TABLE)
    if len(df):
        df = df[df["pre_pt_root_id"].to_numpy() != df["post_pt_root_id"].to_numpy()]
    return conform(df, SYNAPSE_TABLE, origin=f"CAVE {SYNAPSE_TABLE}")
