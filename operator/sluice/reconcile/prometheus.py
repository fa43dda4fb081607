"""Ask Prometheus: instant queries through prometheus-api-client, blocking.

Called from the control loop's worker thread, never from kopf's event loop.
Every failure (unreachable, timeout, HTTP error, PromQL error, a non-vector
answer) becomes a :class:`~sluice.policy.signals.QueryAnswer` with an error
text, never an exception and never a number.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from ..policy.signals import QueryAnswer

log = logging.getLogger("sluice.prometheus")


class Prometheus:
    def __init__(
        self,
        url: str,
        *,
        token_file: str | None = None,
        ca_file: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.token_file = token_file
        self.timeout = timeout
        session = requests.Session()
        if ca_file:
            session.verify = ca_file
        # No retries inside a cycle: the next cycle is the retry, and a cycle must
        # stay bounded by the query timeout when Prometheus is down.
        self.client = PrometheusConnect(
            url=self.url,
            session=session,
            retry=Retry(total=0, connect=0, read=0, status=0),
            timeout=timeout,
        )
        self._pool = ThreadPoolExecutor(max_workers=6, thread_name_prefix="prom")

    def _headers(self) -> dict[str, str] | None:
        if not self.token_file:
            return None
        # Read on every cycle: projected ServiceAccount tokens rotate.
        token = Path(self.token_file).read_text().strip()
        return {"Authorization": f"Bearer {token}"}

    def query(self, promql: str) -> QueryAnswer:
        try:
            self.client.headers = self._headers()
            result: Any = self.client.custom_query(promql)
        except PrometheusApiClientException as e:
            return QueryAnswer(error=f"Prometheus rejected the query: {_short(str(e))}")
        except requests.Timeout:
            return QueryAnswer(error=f"Prometheus did not answer within {self.timeout:g}s")
        except requests.ConnectionError as e:
            return QueryAnswer(error=f"Prometheus at {self.url} is unreachable: {_reason(e)}")
        except (requests.RequestException, OSError, ValueError) as e:
            return QueryAnswer(error=f"querying Prometheus failed: {_short(str(e))}")
        if not isinstance(result, list):
            return QueryAnswer(error="the query did not return an instant vector")
        return QueryAnswer(result=tuple(result))

    def query_all(self, queries: Mapping[str, str]) -> dict[str, QueryAnswer]:
        """Run the queries concurrently; each answer under its key."""
        futures = {k: self._pool.submit(self.query, q) for k, q in queries.items()}
        return {k: f.result() for k, f in futures.items()}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reason(e: Exception) -> str:
    text = str(e)
    for marker in ("Connection refused", "Name or service not known", "timed out"):
        if marker in text:
            return marker.lower()
    return _short(text, 160)
