"""Write the seconds each test file took, from a pytest JUnit XML report, as tests/file_seconds.json.

    python scripts/file-seconds.py REPORT.xml tests/file_seconds.json

`make test-durations` runs the suite with --junitxml and then this; tests/conftest.py orders the
files of `make test` by these figures, longest first.
"""

import json
import sys
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from pathlib import Path


def file_seconds(report: Path) -> dict[str, float]:
    """Seconds per test file name (setup, call and teardown of its tests), longest first."""
    totals: dict[str, float] = defaultdict(float)
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        module = case.get("classname", "").split(".")
        name = next((f"{part}.py" for part in module if part.startswith("test_")), None)
        if name:
            totals[name] += float(case.get("time", 0))
    return {name: round(seconds, 1) for name, seconds in sorted(totals.items(), key=lambda kv: -kv[1])}


def main(argv: list[str]) -> int:
    """Read the report named by argv[0], write the JSON file named by argv[1]."""
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    Path(argv[1]).write_text(json.dumps(file_seconds(Path(argv[0])), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
