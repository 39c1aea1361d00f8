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
  has its post-synaptic ids halved) until no part is capped.
* **Paging by id ranges.** A capped table query with no filter list left to split is read by
  ranges of its primary key ``id`` (``filter_greater_equal_dict`` / ``filter_less_dict``;
  caveclient's ``query_table`` has no ORDER BY, and the engine applies ``offset``/``limit`` to
  rows in no stable order, so offset pages can overlap and lose rows): an open range is closed
  around the ids of its capped answer, a closed one halved, until no range is capped. Ranges
  are disjoint, so no row comes twice; an answer holding an id outside the range asked for means
  the server or a proxy drops the range filters, and stops the pull with an error naming the
  table instead of asking forever. A whole table's rows are checked against the server's own
  count (``get_annotation_count``): a mismatch is an error naming the table, never a smaller
  graph; so is an id that comes back twice.
* **Timeouts and retries.** caveclient retries: every service session it builds for this source
  gets urllib3's ``Retry`` from :func:`caveclient.set_session_defaults` (``max_retries``,
  ``backoff_factor = backoff_s``: waits of 0, ``2 * backoff_s``, ``4 * backoff_s``... seconds, or
  the server's ``Retry-After``; statuses :data:`RETRY_STATUS`; timeouts and dropped connections).
  A request that still fails is a :class:`SourceError`. caveclient sets no request timeout:
  every request its sessions send gets ``timeout_s`` (:func:`_give_timeout`), those made while
  the client is being built included (:func:`_building_caveclient`).
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
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

import numpy as np
import pandas as pd
import requests
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
RETRY_STATUS = (429, 500, 502, 503, 504)
#: Longest wait between two retries, seconds (caveclient's ``backoff_max``).
MAX_BACKOFF_S = 120.0
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


def _give_timeout(session: requests.Session, timeout_s: float) -> requests.Session:
    """``session``, whose requests that set no timeout of their own get ``timeout_s`` seconds
    (requests has no session-wide timeout, caveclient sets none). Its adapters, and with them
    caveclient's retries, are left as they are; a second call only changes the timeout."""
    if not hasattr(session, "default_timeout_s"):
        send = session.request

        def request(method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = session.default_timeout_s
            return send(method, url, *args, **kwargs)

        session.request = request
    session.default_timeout_s = timeout_s
    return session


class _TimedRequests:
    """Stands in for the ``requests`` module inside ``caveclient.base`` while a client is built:
    the service sessions caveclient creates there (and whose first requests it sends at once)
    come with the timeout and keep it, and so do its plain ``requests.get`` calls."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s

    def __getattr__(self, name: str) -> Any:
        return getattr(requests, name)

    def Session(self) -> requests.Session:  # noqa: N802 - the name caveclient calls
        return _give_timeout(requests.Session(), self.timeout_s)

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout_s
        return requests.get(url, **kwargs)


@contextlib.contextmanager
def _building_caveclient(timeout_s: float, **session_defaults: Any) -> Iterator[None]:
    """While inside, the caveclient services built get ``session_defaults``
    (:func:`caveclient.set_session_defaults`: retries) and the timeout (:class:`_TimedRequests`).
    Both are caveclient's module state; they are put back on exit."""
    import caveclient.base as cave_base
    from caveclient import get_session_defaults, set_session_defaults

    before = dict(get_session_defaults())
    original = cave_base.requests
    set_session_defaults(**{**before, **session_defaults})
    cave_base.requests = _TimedRequests(timeout_s)
    try:
        yield
    finally:
        cave_base.requests = original
        set_session_defaults(**before)


def _timed_out(exc: requests.RequestException) -> bool:
    """Whether a request failed for want of an answer in time (after urllib3's retries a read
    timeout surfaces as a ``ConnectionError`` around ``MaxRetryError(ReadTimeoutError)``)."""
    from urllib3.exceptions import NewConnectionError, TimeoutError as Urllib3Timeout

    if isinstance(exc, requests.Timeout):
        return True
    reason = getattr(exc.args[0] if exc.args else None, "reason", None)
    # urllib3's NewConnectionError (refused, unreachable) subclasses its connect timeout
    return isinstance(reason, Urllib3Timeout) and not isinstance(reason, NewConnectionError)


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
        caveclient's retries of a request after HTTP 429/5xx, a timeout or a dropped connection
        (:func:`caveclient.set_session_defaults` ``max_retries`` and ``backoff_factor``: the
        first retry at once, then after ``2 * backoff_s``, ``4 * backoff_s``... seconds, or the
        server's ``Retry-After``), for the services this source builds; a ``client`` passed in
        keeps the retries of the services it has already built.
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
        if backoff_s < 0:
            raise ValueError(f"backoff_s must be >= 0, got {backoff_s}")
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
        #: the server's synapse table (a datastack profile may name another)
        self.synapse_table = SYNAPSE_TABLE
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

    def _session_defaults(self) -> dict[str, Any]:
        """caveclient's session settings for the services this source builds (retries)."""
        return {"max_retries": self.max_retries, "backoff_factor": self.backoff_s,
                "backoff_max": MAX_BACKOFF_S, "status_forcelist": RETRY_STATUS}

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
            return CAVEclient(self.namespace, server_address=self.server_address, auth_token=token,
                              version=self.version)

        try:
            with _building_caveclient(self.timeout_s, **self._session_defaults()):
                return self._call(f"connecting to CAVE datastack {self.namespace!r}", build)
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
            return self._client.info, self._client.materialize

        with _building_caveclient(self.timeout_s, **self._session_defaults()):
            info, mat = self._call(f"connecting to CAVE datastack {self.namespace!r}", get)
        for sub in (info, mat):
            session = getattr(sub, "session", None)
            if isinstance(session, requests.Session):
                _give_timeout(session, self.timeout_s)  # services built before this source
                if self._on_response not in session.hooks["response"]:
                    session.hooks["response"].append(self._on_response)
        self._mat = mat
        return mat

    def _on_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """``requests`` response hook: keep the ``Warning`` header (where the row cap shows)."""
        warning = response.headers.get("Warning")
        if warning:
            self._warnings.append(warning)

    # -- one query: caveclient retries, this source names what failed ----------------------------
    def _retry(self) -> Any:
        """urllib3's ``Retry`` of the materialization session (None before it is built)."""
        session = getattr(self._mat, "session", None)
        if not isinstance(session, requests.Session):
            return None
        return getattr(session.get_adapter("https://"), "max_retries", None)

    def _attempts(self, response: requests.Response | None = None) -> int:
        """Requests sent in all for one query that failed (``response``: its last answer)."""
        retry = self._retry()
        if retry is None:
            return self.max_retries + 1
        if response is not None and not retry.is_retry(
                "POST", response.status_code, has_retry_after="Retry-After" in response.headers):
            return 1
        return int(retry.total or 0) + 1

    def _call(self, what: str, call: Callable[[], T]) -> T:
        """``call()`` (caveclient retries inside it); what still fails becomes one
        :class:`SourceError` saying what to do. caveclient may not open a web browser."""
        from caveclient.base import AuthException

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
            raise SourceError(self._gave_up(what, f"HTTP {status} from the server",
                                            self._attempts(e.response))) from None
        except requests.RequestException as e:
            failure = (f"no answer within {self.timeout_s:g} s" if _timed_out(e)
                       else f"connection failed ({self._scrub(_short(e, 200))})")
            raise SourceError(self._gave_up(what, failure, self._attempts())) from None
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

    def _gave_up(self, what: str, failure: str, attempts: int) -> str:
        return (f"{what}: {failure}, {attempts} attempt(s) in all (timeout {self.timeout_s:g} s per "
                "request, caveclient's retries in between). The server may be down or overloaded: "
                "run the pull again later; finished batches are kept.")

    def _forbidden_message(self, what: str, error: str, message: str, tos_url: str | None) -> str:
        """The one error of a 403 with a reason: the server's words, the Terms-of-Service link."""
        text = f"{what}: the CAVE server refused access (HTTP 403, {error})"
        if message:
            text += f": {self._scrub(_short(message))}"
        text += "" if text.endswith(".") else "."
        if tos_url:
            return (f"{text}\nAccept the dataset's Terms of Service at {tos_url} (logged in with "
                    "the account of your token), then run again.")
        if error == "missing_permission":
            return (f"{text}\nYour token's account lacks access to datastack {self.namespace!r}; "
                    "ask the dataset's maintainers for it, or use another token.\n" + _token_help(self._server))
        return f"{text}\n" + _token_help(self._server)

    def _query(self, what: str, call: Callable[[], pd.DataFrame]) -> tuple[pd.DataFrame, bool]:
        """``call()``; also whether the server capped its result."""

        def once() -> tuple[pd.DataFrame, list[str]]:
            self._warnings.clear()
            with _quiet_limited_query_logs():
                df = call()
            return df, list(self._warnings)

        df, warnings = self._call(what, once)
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
        time. A whole table must have as many rows as the server counts. Rows are sorted by
        ``id``; positions are in nm.
        """
        if table not in SCHEMAS:
            raise ValueError(f"unknown table {table!r}; known: {sorted(SCHEMAS)}")
        return self.fetch_rows(table, table, filter_in=filter_in, progress=progress)

    def fetch_rows(self, table: str, schema: str, *, filter_in: Mapping[str, Sequence] | None = None,
                   progress: bool = True) -> pd.DataFrame:
        """Rows of the server's ``table`` in the canonical schema ``schema`` (a key of
        :data:`SCHEMAS`: a datastack names its tables its own way, e.g. V1DD's cell-type table
        has the columns of ``aibs_metamodel_celltypes_v661``), as :meth:`fetch_table` gives them."""
        filters = {col: _ids(vals) for col, vals in (filter_in or {}).items()}
        if any(len(v) == 0 for v in filters.values()):
            return empty(schema)
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
        if not filters:
            self._check_count(table, len(df))
        df = _canonical_table(df, schema)
        df = conform(df, schema, origin=f"CAVE {self.namespace} v{self.version} {table}")
        return _sorted_unique(df, table)

    def _check_count(self, table: str, n_rows: int) -> None:
        """Refuse a whole table whose rows differ from the server's count of them."""
        mat = self._materialize()
        expected = self._call(f"{table} (row count)", lambda: mat.get_annotation_count(
            table, version=self.version))
        if int(expected) != n_rows:
            raise SourceError(
                f"{table}: the server counts {int(expected)} rows at version {self.version}, the pull "
                f"got {n_rows}: rows were lost or doubled while paging (nothing was cached); run the "
                "pull again, and report it if it persists")

    def _query_table(self, mat: Any, table: str, flt: dict | None,
                     ids: tuple[int | None, int | None] = (None, None)) -> pd.DataFrame:
        """One ``query_table`` of ``table`` (filters ``flt``, ids in ``[ids[0], ids[1])``)."""
        lo, hi = ids
        return mat.query_table(
            table, filter_in_dict=flt, split_positions=True, desired_resolution=RESOLUTION_NM,
            materialization_version=self.version, metadata=False,
            filter_greater_equal_dict=None if lo is None else {"id": lo},
            filter_less_dict=None if hi is None else {"id": hi},
        )

    def _table_rows(self, table: str, flt: dict | None, key: str | None) -> list[pd.DataFrame]:
        """One filtered query of ``table``; halves ``flt[key]`` while the server caps it, then
        reads what is still capped by id ranges."""
        mat = self._materialize()
        n = len(flt[key]) if flt else 0
        what = f"{table}" + (f" ({n} {key} values)" if flt else "")
        df, capped = self._query(what, lambda: self._query_table(mat, table, flt))
        if not capped:
            return [df]
        if flt and n >= 2:
            half = n // 2
            return (self._table_rows(table, {**flt, key: flt[key][:half]}, key)
                    + self._table_rows(table, {**flt, key: flt[key][half:]}, key))
        return self._id_ranges(table, flt, what, df)

    def _id_ranges(self, table: str, flt: dict | None, what: str, answer: pd.DataFrame,
                   lo: int | None = None, hi: int | None = None) -> list[pd.DataFrame]:
        """All rows with ``lo <= id < hi`` (None: unbounded), of which ``answer`` is the capped
        part the server gave: an open range is closed around ``answer``'s ids (the rows beyond
        them asked for apart), a closed one halved, until no range is capped."""
        if lo is not None and hi is not None and hi - lo < 2:
            return [answer]  # one id, the primary key: nothing can be missing
        if lo is None or hi is None:
            if not len(answer):
                raise SourceError(f"{what}: the server capped an answer with no rows; cannot page {table}")
            first, last = int(answer["id"].min()), int(answer["id"].max()) + 1
            parts = (([(None, first)] if lo is None else [])
                     + [(first if lo is None else lo, last if hi is None else hi)]
                     + ([(last, None)] if hi is None else []))
        else:
            mid = lo + (hi - lo) // 2
            parts = [(lo, mid), (mid, hi)]
        mat = self._materialize()
        frames: list[pd.DataFrame] = []
        for part in parts:
            got, capped = self._query(f"{what}, ids {_span(part)}",
                                      lambda p=part: self._query_table(mat, table, flt, p))
            outside = _outside(got["id"] if len(got) else pd.Series([], dtype="int64"), *part)
            if outside is not None:
                raise SourceError(
                    f"{table}: asked for ids {_span(part)}, the server answered id {outside}: it (or a "
                    "proxy) ignores the id range filters, so the capped table cannot be paged and the "
                    "pull makes no progress; nothing was cached")
            frames.extend(self._id_ranges(table, flt, what, got, *part) if capped else [got])
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
        df = conform(df, SYNAPSE_TABLE, origin=f"CAVE {self.namespace} v{self.version} {SYNAPSE_TABLE}")
        return _sorted_unique(df, SYNAPSE_TABLE)

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
                materialization_version=self.version, synapse_table=self.synapse_table,
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


def _span(ids: tuple[int | None, int | None]) -> str:
    lo, hi = ids
    return f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi})"


def _outside(ids: pd.Series, lo: int | None, hi: int | None) -> int | None:
    """The first of ``ids`` outside ``[lo, hi)`` (None: unbounded), or None."""
    bad = np.zeros(len(ids), dtype=bool)
    if lo is not None:
        bad |= ids.to_numpy() < lo
    if hi is not None:
        bad |= ids.to_numpy() >= hi
    return int(ids.to_numpy()[bad][0]) if bad.any() else None


def _sorted_unique(df: pd.DataFrame, table: str) -> pd.DataFrame:
    """``df`` sorted by ``id``; an id that came twice (pages that overlapped) is an error."""
    dup = df["id"].duplicated()
    if dup.any():
        raise SourceError(f"{table}: the server returned id {int(df['id'][dup].iloc[0])} twice: pages "
                          "overlapped, so rows may be missing too (nothing was cached); run the pull again")
    return df.sort_values("id", kind="stable").reset_index(drop=True)


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
