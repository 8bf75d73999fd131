"""A registering process for the many-writers and crash tests (and the S3 benchmark), as another machine would be.

    python tests/writers.py PLAN.json   # PLAN: [[path, name], ...]; prints one JSON line per registration

The registry comes from the environment (MODELKIN_HOME, MODELKIN_DATABASE_URL, MODELKIN_STORE, AWS_*).
"""

from __future__ import annotations

import json
import sys
import time

from modelkin import Registry


def main(plan_path: str) -> None:
    plan = json.loads(open(plan_path).read())
    with Registry.open() as reg:
        for path, name in plan:
            start = time.perf_counter()
            r = reg.register(path, name=name)
            print(json.dumps({"name": name, "ref": r.version.ref, "digest": r.version.digest, "created": r.created,
                              "seconds": time.perf_counter() - start}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1])
