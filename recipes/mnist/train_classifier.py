"""Train the digit classifier whose features evaluate image GANs (kept as multigan/assets/digit-classifier.pt).

    python recipes/mnist/train_classifier.py --data-root ../shared/data

A small CNN on MNIST's 60,000 training digits with random shifts of up to
2 pixels; it reports accuracy on the 10,000 test digits (about 3 minutes on
2 CPU cores).
"""
import argparse
import logging

import torch

from multigan.console import setup_logging
from multigan.data.mnist import load_mnist
from multigan.metrics.classifier_training import fit_classifier, shift_images
from multigan.metrics.feature_file import save_feature_net
from multigan.metrics.feature_inputs import DigitImages
from multigan.metrics.feature_net import FeatureNet

log = logging.getLogger("multigan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", help="a folder holding MNIST/raw (default: the cache or a download)")
    p.add_argument("--out", default="multigan/assets/digit-classifier.pt")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    setup_logging()
    torch.manual_seed(args.seed)
    train, test = load_mnist(args.data_root, train=True), load_mnist(args.data_root, train=False)
    transform = DigitImages(28, 28)
    steps = len(train) // args.batch_size

    def batches(epoch: int):
        gen = torch.Generator().manual_seed(args.seed * 1000 + epoch)
        order = torch.randperm(len(train), generator=gen)
        for i in range(steps):
            idx = order[i * args.batch_size:(i + 1) * args.batch_size]
            yield shift_images(transform.inputs(train.images[idx]), 2, gen), train.labels[idx]

    net = FeatureNet(n_classes=10, width=16, feature_dim=128)
    accuracy = fit_classifier(net, batches, (transform.inputs(test.images), test.labels),
                              epochs=args.epochs, steps_per_epoch=steps)
    save_feature_net(args.out, net, transform, class_names=[str(d) for d in range(10)], test_accuracy=accuracy,
                     trained_on=f"MNIST train ({len(train):,} digits), {args.epochs} epochs, seed {args.seed}")
    log.info("MNIST test accuracy %.2f%%; wrote %s", 100 * accuracy, args.out)


if __name__ == "__main__":
    main()
