"""multigan: GANs on images and sounds with one adversarial engine.

    import multigan
    last = multigan.train("mnist-quick", "runs/try", settings={"data.root": "data", "train.steps": 500})
    samples = multigan.generate(last, 16)   # shows as a grid (and audio players) in a notebook
    samples.save("runs/try/generated")
    multigan.evaluate(last)
"""
import sys as _sys
import types as _types

from multigan.api import evaluate, generate, restore, train

__all__ = ["train", "restore", "generate", "evaluate"]


class _Package(_types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        # Importing the submodule multigan.generate (or .restore) sets the package attribute of that
        # name; the function must stay. The module stays in sys.modules, where `from multigan.generate
        # import ...` finds it.
        if name in __all__ and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
