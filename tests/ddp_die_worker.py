"""torchrun worker for tests/test_reliability.py: rank 1 dies at its third step; the run must not hang."""

import os
import sys

from damp.config import load_config
from damp.methods.noise import WeightNoise
from damp.train import train


def main(out: str) -> None:
    if os.environ.get("RANK") == "1":
        original, calls = WeightNoise.backward, {"n": 0}

        def dying(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 3:
                os._exit(1)  # a crash: no cleanup, no goodbye to the other rank
            return original(self, *args, **kwargs)

        WeightNoise.backward = dying
    cfg = load_config(None, ["trainer.device=cpu", "trainer.progress=false", "data.batch_size=32",
                             "method.name=damp", "method.std=0.1", "method.num_perturbations=2",
                             "trainer.max_steps=50", "eval.corruptions=none"])
    train(cfg, out)


if __name__ == "__main__":  # never at import (pytest --doctest-modules imports every module)
    main(sys.argv[1])
