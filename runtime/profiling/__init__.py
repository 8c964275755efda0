"""Profiling on this machine or a board (the library behind `lbdeploy profile`), split by concern:

- report.py: what was measured (ProfiledModel, Measurement, ProfileReport) and its JSON form;
- measure.py: loading backends, interleaved timing, memory, the per-op pass (`profile`);
- rpc.py: the same measurement of a TVM module on a board through TVM's RPC;
- plot.py: the PNG of a report.

Which sources to profile with which backends (exporting a model.pt on the fly for --compare) is
planned one layer up, in workflows/compare.py. To give a backend a per-op breakdown, give its
runtime class an `op_breakdown(feeds, runs, top) -> Breakdown` method (the record and the trace
readers live with the backends, runtime/backends/breakdown.py: profiling imports the backends,
never the other way round; pyproject.toml forbids it).
"""

from lbdeploy.runtime.backends.breakdown import Breakdown
from lbdeploy.runtime.profiling.measure import profile
from lbdeploy.runtime.profiling.report import Measurement, ProfileReport, ProfiledModel

__all__ = ["Breakdown", "Measurement", "ProfileReport", "ProfiledModel", "profile"]
