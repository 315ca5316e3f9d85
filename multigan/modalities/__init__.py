"""Modality adapters: the only code that knows what a sample means."""
