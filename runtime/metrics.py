"""Prometheus metrics of the pose server, kept in memory and written in the text exposition format.

Three families, labelled by endpoint: request counts by status code, error counts by error type
(each error response counted once), and a latency histogram; plus the gauge of requests admitted
for inference now (runtime.admission). Written by hand (no client library) so a board needs nothing extra.
To add a metric, add a dict keyed by label values here and write it in `render`.
"""

from __future__ import annotations

import threading
from collections import defaultdict

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class ServerMetrics:
    """Thread-safe counters and histogram for the HTTP server."""

    def __init__(self):
        self._lock = threading.Lock()
        self._requests = defaultdict(int)  # (endpoint, status) -> count
        self._errors = defaultdict(int)  # (endpoint, error type) -> count
        self._bucket_counts = defaultdict(lambda: [0] * len(LATENCY_BUCKETS))  # endpoint -> per-bucket counts
        self._latency_sum = defaultdict(float)
        self._latency_count = defaultdict(int)

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        """Record one finished request."""
        with self._lock:
            self._requests[(endpoint, int(status))] += 1
            self._latency_sum[endpoint] += seconds
            self._latency_count[endpoint] += 1
            counts = self._bucket_counts[endpoint]
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    counts[i] += 1

    def error(self, endpoint: str, error_type: str) -> None:
        """Record one error answered to a client (4xx/5xx), by error type."""
        with self._lock:
            self._errors[(endpoint, error_type)] += 1

    def render(self, admitted: int = 0) -> str:
        """All metrics in the Prometheus text exposition format (version 0.0.4).

        Args:
            admitted: requests decoding or inferring now (the admission gauge).
        """
        lines = ["# HELP lbdeploy_requests_admitted Requests decoding or inferring now.",
                 "# TYPE lbdeploy_requests_admitted gauge",
                 f"lbdeploy_requests_admitted {int(admitted)}",
                 "# HELP lbdeploy_requests_total HTTP requests answered, by endpoint and status code.",
                 "# TYPE lbdeploy_requests_total counter"]
        with self._lock:
            for (endpoint, status), count in sorted(self._requests.items()):
                lines.append(f'lbdeploy_requests_total{{endpoint="{_escape(endpoint)}",status="{status}"}} {count}')
            lines += ["# HELP lbdeploy_errors_total Requests answered with an error, by endpoint and error type.",
                      "# TYPE lbdeploy_errors_total counter"]
            for (endpoint, kind), count in sorted(self._errors.items()):
                lines.append(f'lbdeploy_errors_total{{endpoint="{_escape(endpoint)}",type="{_escape(kind)}"}} {count}')
            lines += ["# HELP lbdeploy_request_latency_seconds Request latency, by endpoint.",
                      "# TYPE lbdeploy_request_latency_seconds histogram"]
            for endpoint in sorted(self._latency_count):
                label = _escape(endpoint)
                for bound, count in zip(LATENCY_BUCKETS, self._bucket_counts[endpoint]):
                    lines.append(f'lbdeploy_request_latency_seconds_bucket{{endpoint="{label}",le="{bound}"}} {count}')
                total = self._latency_count[endpoint]
                lines.append(f'lbdeploy_request_latency_seconds_bucket{{endpoint="{label}",le="+Inf"}} {total}')
                lines.append(f'lbdeploy_request_latency_seconds_sum{{endpoint="{label}"}} {self._latency_sum[endpoint]:.6f}')
                lines.append(f'lbdeploy_request_latency_seconds_count{{endpoint="{label}"}} {total}')
        return "\n".join(lines) + "\n"
