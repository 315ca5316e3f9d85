"""The feature networks' public names in one place, for code that imports them from here.

The network is in `feature_net`, its input transforms in `feature_inputs`,
its file format in `feature_file`, and its training in `classifier_training`.
"""
from multigan.metrics.classifier_training import fit_classifier, mask_bands, shift_images, split_by_group
from multigan.metrics.feature_file import KIND, load_feature_net, save_feature_net
from multigan.metrics.feature_inputs import INPUTS, ColourImages, DigitImages, LogMelClips
from multigan.metrics.feature_net import CONFIDENCE_MARGIN, FeatureExtractor, FeatureNet, mismatch_warning

__all__ = ["CONFIDENCE_MARGIN", "INPUTS", "KIND", "ColourImages", "DigitImages", "FeatureExtractor", "FeatureNet",
           "LogMelClips", "fit_classifier", "load_feature_net", "mask_bands", "mismatch_warning", "save_feature_net",
           "shift_images", "split_by_group"]
