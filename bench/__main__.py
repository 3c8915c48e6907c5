"""Run every benchmark with its quick defaults: ``python -m bench`` (``make bench``).

Each benchmark runs in its own process and prints its figures and a ratio against a baseline
measured in the same run.
"""

from __future__ import annotations

import subprocess
import sys

BENCHES = [
    ["bench.transfer_throughput"],
    ["bench.emulator_memory", "--size", str(512 << 20)],
    ["bench.large_file", "--size", str(1 << 30)],
]

if __name__ == "__main__":
    failed = [b[0] for b in BENCHES if subprocess.run([sys.executable, "-m", *b]).returncode]
    sys.exit(f"failed: {', '.join(failed)}" if failed else 0)
