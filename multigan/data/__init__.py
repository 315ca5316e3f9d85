"""Datasets: MNIST, image folders, audio-clip folders.

Import the loaders from their modules (`multigan.data.mnist`,
`multigan.data.image_folder`, ...); this package imports nothing so that
`import multigan.data` stays cheap.
"""
