"""A blocking Handle REST client on ``http.client`` with one kept-alive connection.

Used by the CLI and tests; it speaks the API exactly as documented (Basic auth with the percent-encoded
identity), so it doubles as a check that plain HTTP clients work.

A node that sheds a request (HTTP 503 with code 3: refused before any work) is asked again after a pause,
a bounded number of times, and every such retry is logged at WARNING (``BUSY_NOTE``), so that a user, or a
test, sees that the node was shedding load rather than a silent slowdown.
"""

from __future__ import annotations

import base64
import builtins
import http.client
import json
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

#: Pauses before sending again when a node answers 503 with code 3 (server too busy, load shed).
BUSY_BACKOFF_S = (0.1, 0.3, 1.0)
SERVER_TOO_BUSY = 3
#: In every warning about a retried 503 (tests look for it in the CLI's stderr).
BUSY_NOTE = "busy (HTTP 503, code 3)"
log = logging.getLogger("idresolve.client")


class ClientError(Exception):
    """The node could not be reached or answered something that is not the API."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]

    @property
    def code(self) -> int:
        return int(self.body.get("responseCode", 0)) if self.body else 0

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def basic_header(identity: str, secret: str) -> str:
    user = quote(identity, safe="")
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")


class RestClient:
    def __init__(self, base_url: str, *, identity: str | None = None, secret: str | None = None,
                 timeout_s: float = 30.0, verify_tls: bool = True) -> None:
        parts = urlsplit(base_url if "://" in base_url else f"http://{base_url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ClientError(f"bad server URL {base_url!r}; expected http://host:port")
        self.base_url = f"{parts.scheme}://{parts.netloc}"
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port or (443 if self._https else 80)
        self._timeout = timeout_s
        self._ctx = None if verify_tls else ssl._create_unverified_context()
        self._conn: http.client.HTTPConnection | None = None
        self.auth = basic_header(identity, secret) if identity and secret else None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout,
                                                         context=self._ctx)
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        return self._conn

    def request(self, method: str, path: str, *, query: list[tuple[str, str]] | None = None,
                body: Any = None, auth: bool = True) -> Answer:
        url = path + (("?" + urlencode(query)) if query else "")
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth and self.auth:
            headers["Authorization"] = self.auth
        for pause in (*BUSY_BACKOFF_S, None):
            answer = self._send(method, url, data, headers)
            if pause is None or not (answer.status == 503 and answer.code == SERVER_TOO_BUSY):
                return answer
            # The node shed the request before doing anything (code 3): safe to send again, after a pause.
            log.warning("%s was %s: the node shed %s %s before doing anything; sending it again in %g s",
                        self.base_url, BUSY_NOTE, method, path, pause)
            time.sleep(pause)
        raise AssertionError("unreachable")

    def _send(self, method: str, url: str, data: bytes | None, headers: dict[str, str]) -> Answer:
        for attempt in (0, 1):  # one retry on a kept-alive connection the server closed
            conn = self._connection()
            try:
                conn.request(method, url, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                self.close()
                if attempt == 1 or isinstance(exc, TimeoutError | ConnectionRefusedError):
                    raise ClientError(f"cannot reach {self.base_url}: {exc}") from None
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            raise ClientError(f"{self.base_url} answered {resp.status} with a body that is not JSON") from None
        return Answer(resp.status, parsed if isinstance(parsed, dict) else {"value": parsed})

    # -- the API ------------------------------------------------------------------------------------
    @staticmethod
    def _path(handle: str) -> str:
        return "/api/handles/" + quote(handle, safe="/:.")

    def resolve(self, handle: str, *, types: list[str] | None = None, indexes: list[int] | None = None) -> Answer:
        query = [("type", t) for t in types or []] + [("index", str(i)) for i in indexes or []]
        return self.request("GET", self._path(handle), query=query or None)

    def put(self, handle: str, values: list[dict[str, Any]], *, overwrite: bool = True,
            indexes: list[int] | None = None) -> Answer:
        query = [("index", str(i)) for i in indexes or []]
        if not overwrite:
            query.append(("overwrite", "false"))
        return self.request("PUT", self._path(handle), query=query or None, body={"values": values})

    def delete(self, handle: str, *, indexes: list[int] | None = None) -> Answer:
        query = [("index", str(i)) for i in indexes or []]
        return self.request("DELETE", self._path(handle), query=query or None)

    def list(self, prefix: str, *, page: int | None = None, page_size: int | None = None) -> Answer:
        query = [("prefix", prefix)]
        if page is not None:
            query.append(("page", str(page)))
        if page_size is not None:
            query.append(("pageSize", str(page_size)))
        return self.request("GET", "/api/handles", query=query)

    def batch(self, items: builtins.list[dict[str, Any]], *, overwrite: bool = False) -> Answer:
        return self.request("POST", "/api/batch", body={"handles": items, "overwrite": overwrite})

    def health(self) -> Answer:
        return self.request("GET", "/healthz", auth=False)
