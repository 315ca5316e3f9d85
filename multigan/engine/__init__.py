"""The modality-agnostic adversarial training engine."""
