"""Reading the daemon's /metrics in tests: fetch it over HTTP and parse it with
prometheus_client's own parser, so a misnamed or malformed metric fails."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def get(port: int, path: str) -> tuple[int, str]:
    """(HTTP status, body) of a GET on the daemon's metrics address."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def try_get(port: int, path: str) -> tuple[int, str] | None:
    """Like get(), None while nothing listens yet."""
    try:
        return get(port, path)
    except (urllib.error.URLError, ConnectionError):
        return None


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample of /metrics: {(sample name, labels): value}."""
    status, text = get(port, "/metrics")
    assert status == 200, text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def total(samples: Samples, name: str) -> float:
    """The sum over every label set of one sample name."""
    return sum(v for (n, _), v in samples.items() if n == name)
