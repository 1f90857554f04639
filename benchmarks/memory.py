"""Peak extra host memory of one call, measured in a fresh process: its peak
resident set size during the call minus the resident size before it (torch
keeps no CPU allocator statistics). Linux only: the peak is reset through
/proc/self/clear_refs."""

import json
import subprocess
import sys


def peak_extra_mib(setup: str, statement: str) -> float:
    """Runs `setup`, then `statement` once, in a new interpreter; returns how
    far the statement raised the process's peak RSS, in MiB."""
    code = "\n".join(
        [
            "import gc, json, torch",
            "def kib(field):",
            "    for line in open('/proc/self/status'):",
            "        if line.startswith(field):",
            "            return int(line.split()[1])",
            setup,
            statement,  # warm-up: first-call allocations, lazy init
            "gc.collect()",
            "before = kib('VmRSS:')",
            "open('/proc/self/clear_refs', 'w').write('5')  # reset the peak (VmHWM)",
            statement,
            "print(json.dumps((kib('VmHWM:') - before) / 1024.0))",
        ]
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
