"""Train the emoji classifier whose features evaluate colour-image GANs (kept as multigan/assets/emoji-classifier.pt).

    python recipes/images/train_classifier.py --data-root ../shared/data/emoji

A small CNN on the 10 categories of emoji.json (Smileys & Emotion, Flags,
Food & Drink, ...) over the 64x64 Noto emoji of png/, composited on white,
with random shifts of up to 4 pixels and horizontal flips. A fifth of the
base emoji is held out, each with all its skin-tone variants, and the
accuracy on them is reported (about 5 minutes on 2 CPU cores).
"""
import argparse
import logging
from pathlib import Path

import torch

from multigan.console import setup_logging
from multigan.data.image_folder import labels_from_table, load_image_folder
from multigan.metrics.classifier_training import fit_classifier, shift_images, split_by_group
from multigan.metrics.feature_file import save_feature_net
from multigan.metrics.feature_inputs import ColourImages
from multigan.metrics.feature_net import FeatureNet

log = logging.getLogger("multigan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True, help="the emoji folder: emoji.json and png/")
    p.add_argument("--out", default="multigan/assets/emoji-classifier.pt")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    setup_logging()
    torch.manual_seed(args.seed)
    root = Path(args.data_root)
    data = load_image_folder(root / "png", channels=3, height=64, width=64, background=(255, 255, 255),
                             labels=labels_from_table(root / "emoji.json", label_field="category"))
    base = labels_from_table(root / "emoji.json", label_field="name")  # variants inherit their base emoji's name
    held = split_by_group([base[p.name] for p in data.paths], args.test_fraction, args.seed)
    train_idx, test_idx = (~held).nonzero().flatten(), held.nonzero().flatten()
    transform = ColourImages(64, 64)
    steps = len(train_idx) // args.batch_size

    def batches(epoch: int):
        gen = torch.Generator().manual_seed(args.seed * 1000 + epoch)
        order = train_idx[torch.randperm(len(train_idx), generator=gen)]
        for i in range(steps):
            idx = order[i * args.batch_size:(i + 1) * args.batch_size]
            x = shift_images(transform.inputs(data.images[idx]), 4, gen, fill=1.0)  # white comes in at the border
            flip = torch.rand(len(idx), generator=gen) < 0.5
            yield torch.where(flip[:, None, None, None], x.flip(3), x), data.labels[idx]

    net = FeatureNet(n_classes=len(data.class_names), width=args.width, feature_dim=128, in_channels=3)
    accuracy = fit_classifier(net, batches, (transform.inputs(data.images[test_idx]), data.labels[test_idx]),
                              epochs=args.epochs, steps_per_epoch=steps)
    save_feature_net(args.out, net, transform, class_names=data.class_names, test_accuracy=accuracy,
                     trained_on=f"Noto emoji categories ({len(train_idx):,} images, {args.test_fraction:.0%} of base "
                                f"emoji held out), {args.epochs} epochs, seed {args.seed}")
    log.info("held-out accuracy (%d emoji of %d) %.2f%%; wrote %s", len(test_idx), len(data), 100 * accuracy, args.out)


if __name__ == "__main__":
    main()
