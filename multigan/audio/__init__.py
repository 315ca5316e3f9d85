"""Audio signal processing as plain functions on torch tensors.

`spectral` holds the STFT, mel filterbank, dB conversions, the inverse mel
(non-negative least squares) and the spectral distances; `griffin_lim` holds
phase reconstruction. All are batched over leading dimensions and run on any
device. Import the submodules directly: this package imports nothing heavy.
"""
