"""Train a DCGAN on a folder of colour pictures at 64x64, then write 64 samples from the last checkpoint.

    python recipes/images/train.py --data-root ../shared/data/emoji/png      # -> runs/images-64-png
    python recipes/images/train.py --data-root ~/data/celeba --steps 20000   # -> runs/images-64-celeba

Any files PIL reads, in sub-folders (which become classes) or not; resized to
cover 64x64 and centre-cropped; transparent pixels composited on white. The
run is named, and its folder defaults to, images-64-<folder name>. For more
settings (labels of a flat folder from a table, another network family), use
`multigan train images-64 --data-root DIR --set data.labels=emoji.json ...`.
"""
import argparse
import sys
from pathlib import Path

from multigan.cli import recipe_main
from multigan.folders import run_folder_name
from multigan.presets import images64


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # The folder names the run, and so its default folder runs/NAME: read --data-root first,
    # and leave the parsing and checking of every flag to recipe_main.
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--data-root")
    known, _ = pre.parse_known_args(argv)
    name = "images-64" + (f"-{run_folder_name(Path(known.data_root).expanduser().resolve().name)}" if known.data_root else "")
    return recipe_main({"images-64": lambda: images64().override("name", name)}, __doc__.split("\n\n")[0],
                       n_samples=64, needs_data=True, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
