"""What `lbdeploy profile` measured: the records and their JSON form (schema in docs/profile.md)."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lbdeploy.runtime.backends.breakdown import Breakdown

SCHEMA = "lbdeploy-profile/1"


@dataclass
class ProfiledModel:
    """One thing to profile: a source (artifact folder or model.pt) run by one backend.

    Attributes:
        label: the name shown in tables and JSON (the backend name, made unique).
        source: the artifact folder or model.pt.
        backend: the concrete backend name (lbdeploy.backends).
        manifest: the artifact's manifest ({} for a model.pt; the torch backend derives it).
        exported: True when the folder was exported on the fly from a model.pt for --compare.
    """

    label: str
    source: Path
    backend: str
    manifest: dict
    exported: bool = False


@dataclass
class Measurement:
    """What was measured for one model.

    Attributes:
        model: the ProfiledModel (or, for a remote board, one whose label names the board).
        batch / threads: the settings used. load_s: backend construction time. first_run_ms: the
        first (warm-up) run. samples_s: every timed run in seconds. rss_growth_mb: resident memory
        gained over load + warm-up (None when unknown). breakdown: the per-op pass.
        remote: {"address", "key"} for a run on an RPC board.
    """

    model: ProfiledModel
    batch: int
    threads: int | None
    load_s: float
    first_run_ms: float
    samples_s: list[float]
    rss_growth_mb: float | None
    breakdown: Breakdown
    remote: dict | None = None

    def latency_ms(self) -> dict:
        """min, p50, p90, p99, mean and max of the timed runs, in milliseconds."""
        ms = np.asarray(self.samples_s, dtype=np.float64) * 1e3
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return {"min": float(ms.min()), "p50": float(p50), "p90": float(p90), "p99": float(p99),
                "mean": float(ms.mean()), "max": float(ms.max())}

    def throughput(self) -> dict:
        """Images per second: batch / p50 latency and batch / mean latency."""
        latency = self.latency_ms()
        return {"p50_images_per_s": self.batch * 1e3 / latency["p50"],
                "mean_images_per_s": self.batch * 1e3 / latency["mean"]}

    def to_dict(self) -> dict:
        """The JSON form of one result (docs/profile.md)."""
        return {
            "label": self.model.label, "source": str(self.model.source), "backend": self.model.backend,
            "exported_on_the_fly": self.model.exported, "remote": self.remote,
            "batch": self.batch, "threads": self.threads, "runs": len(self.samples_s),
            "load_s": self.load_s, "first_run_ms": self.first_run_ms,
            "latency_ms": self.latency_ms(), "throughput": self.throughput(),
            "memory": {"rss_growth_mb": self.rss_growth_mb},
            "breakdown": self.breakdown.to_dict(),
            "kernels": self.model.manifest.get("kernels"),
            "samples_ms": [s * 1e3 for s in self.samples_s],
        }


@dataclass
class ProfileReport:
    """All results of one `profile` call; the first result is the baseline of the ratios."""

    results: list[Measurement]
    runs: int
    warmup: int
    peak_rss_mb: float | None

    def ratios(self) -> dict:
        """label -> latency and throughput of each result relative to the first result."""
        base = self.results[0]
        base_latency, base_throughput = base.latency_ms(), base.throughput()["p50_images_per_s"]
        ratios = {}
        for result in self.results:
            latency = result.latency_ms()
            ratios[result.model.label] = {
                "p50": latency["p50"] / base_latency["p50"], "mean": latency["mean"] / base_latency["mean"],
                "throughput": result.throughput()["p50_images_per_s"] / base_throughput,
            }
        return ratios

    def to_dict(self) -> dict:
        """The document printed by `lbdeploy profile --json` (schema in docs/profile.md)."""
        return {
            "schema": SCHEMA,
            "machine": {"arch": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
            "settings": {"runs": self.runs, "warmup": self.warmup},
            "memory": {"peak_rss_mb": self.peak_rss_mb},
            "baseline": self.results[0].model.label,
            "results": [result.to_dict() for result in self.results],
            "ratios": self.ratios(),
        }
