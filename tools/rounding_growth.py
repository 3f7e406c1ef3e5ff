"""How far one rounding error grows over the digits recipe's training, in float64.

Trains the digits recipe (npvit/train/recipes.py) for 2 epochs twice in this one process: once as
is, once from weights multiplied by (1 + 2.2e-16 * noise), i.e. perturbed by about one rounding.
Prints max over parameters of ||a - b|| / ||a|| after each epoch.  This is the floor for any two
runs that add the same numbers in a different order (a data-parallel run's K partial sums), which
README "Scaling out" and tests/test_mpi.py compare against.

    PYTHONPATH=. python tools/rounding_growth.py          # needs scikit-learn (the digits)
"""
import dataclasses
import os
import tempfile

import numpy as np

from npvit.model import ViTConfig, VisionTransformer
from npvit.train import train
from npvit.train.recipes import RECIPES


def main():
    recipe = RECIPES["digits"]
    train_ds, _ = recipe.load()
    cfg = dataclasses.replace(recipe.train, epochs=2)

    def model(perturb):
        m = VisionTransformer(ViTConfig(**recipe.model), dtype="float64")
        m.preprocess = recipe.preprocess
        if perturb:
            rng = np.random.default_rng(1)
            for p in m.params.values():
                p *= 1 + 2.2e-16 * rng.standard_normal(p.shape)
        return m

    a, b = model(False), model(True)
    with tempfile.TemporaryDirectory() as tmp:
        for epoch in (1, 2):  # one epoch at a time (resuming), to compare after each
            for m, name in ((a, "a"), (b, "b")):
                train(m, train_ds, None, cfg, progress=False, stop_after=1, out=os.path.join(tmp, name),
                      resume=epoch > 1)
            worst = max(np.linalg.norm(a.params[k] - b.params[k]) / np.linalg.norm(a.params[k]) for k in a.params)
            print(f"after epoch {epoch}: max ||a - b|| / ||a|| = {worst:.2e}")


if __name__ == "__main__":
    main()
