"""Golden uAPI values: what a C file of `V(name, expr)` lines compiles to.

The .json next to the .c is the golden; GUESTPM_REGOLD=1 regenerates it with
`compiler -S` (the compiler's data directive for a 64-bit value is `word`)."""

import json
import os
import re
import subprocess
from pathlib import Path


def values(c_file: Path, compiler: str, word: str) -> dict[str, int]:
    path = c_file.with_suffix(".json")
    if os.environ.get("GUESTPM_REGOLD"):
        asm = subprocess.run([compiler, "-S", "-o", "-", str(c_file)],
                             check=True, capture_output=True, text=True).stdout
        found = {m[1]: int(m[2] or 0)      # a zero is emitted as ".zero 8"
                 for m in re.finditer(rf"^v_(\w+):\n\s+\.(?:{word}\s+(\d+)|zero\s+8)", asm, re.MULTILINE)}
        path.write_text(json.dumps(found, indent=1) + "\n")
    return json.loads(path.read_text())
