"""Train the spoken-digit classifier whose features evaluate voice GANs (kept as multigan/assets/spoken-digit-classifier.pt).

    python recipes/voice/train_classifier.py --data-root ../shared/data/fsdd/recordings

A small CNN on log-mel spectrograms of the Free Spoken Digit Dataset,
trained on takes 5-49 and tested on takes 0-4 (every speaker appears in
both), with random crops, random gain and masked frequency bands (a few
minutes on 2 CPU cores).
"""
import argparse
import logging

import torch

from multigan.config import AudioConfig
from multigan.console import setup_logging
from multigan.data.audio_folder import fsdd_split, load_clip_folder
from multigan.metrics.classifier_training import fit_classifier, mask_bands
from multigan.metrics.feature_file import save_feature_net
from multigan.metrics.feature_inputs import LogMelClips
from multigan.metrics.feature_net import FeatureNet
from multigan.modalities.mel import MelModality

log = logging.getLogger("multigan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True, help="the FSDD recordings folder ({digit}_{speaker}_{take}.wav)")
    p.add_argument("--out", default="multigan/assets/spoken-digit-classifier.pt")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    setup_logging()
    torch.manual_seed(args.seed)
    audio = AudioConfig()  # 8 kHz, 64 mels x 64 frames: the voice recipes' settings
    load = dict(sample_rate=audio.sample_rate, length=audio.length, trim_db=audio.trim_db)
    train = load_clip_folder(args.data_root, crop="random", select=fsdd_split("train"), **load)
    test = load_clip_folder(args.data_root, crop="center", select=fsdd_split("test"), **load)
    stats = MelModality.fit(audio, train.waveforms)
    transform = LogMelClips.from_mel(stats)  # the adapter's analysis and per-bin statistics
    steps = len(train) // args.batch_size

    def batches(epoch: int):
        gen = torch.Generator().manual_seed(args.seed * 1000 + epoch)
        order = torch.randperm(len(train), generator=gen)
        for i in range(steps):
            idx = order[i * args.batch_size:(i + 1) * args.batch_size]
            gain = 10 ** ((torch.rand(len(idx), 1, generator=gen) * 12 - 6) / 20)  # +-6 dB
            x = transform.inputs(train.__getitems__(idx.tolist()) * gain, audio.sample_rate)
            yield mask_bands(x, 8, gen), train.labels[idx]

    x_test = transform.inputs(test.__getitems__(range(len(test))), audio.sample_rate)
    net = FeatureNet(n_classes=len(train.class_names), width=16, feature_dim=128)
    accuracy = fit_classifier(net, batches, (x_test, test.labels), epochs=args.epochs, steps_per_epoch=steps)
    save_feature_net(args.out, net, transform, class_names=train.class_names, test_accuracy=accuracy,
                     trained_on=f"FSDD takes 5-49 ({len(train):,} clips), {args.epochs} epochs, seed {args.seed}")
    log.info("FSDD test accuracy (takes 0-4, %d clips) %.2f%%; wrote %s", len(test), 100 * accuracy, args.out)


if __name__ == "__main__":
    main()
