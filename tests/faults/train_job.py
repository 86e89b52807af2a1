"""Train the tiny model in its own process so a fault point can SIGKILL it (tests/faults).

usage: python tests/faults/train_job.py OUT '{"steps": 7, "checkpoint_every": 3, ...}'
The JSON holds keyword arguments of ``harness.train_tiny``. Prints ``HASH <sha256 of the adapter tensors>``.
"""

import json
import logging
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    from tests.faults.harness import train_tiny
    from workbench.hashing import tensors_hash

    result = train_tiny(Path(sys.argv[1]), **json.loads(sys.argv[2] if len(sys.argv) > 2 else "{}"))
    print("HASH", tensors_hash(result.adapter.tensors))


if __name__ == "__main__":
    main()
