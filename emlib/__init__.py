"""emlib: GAN-based self-supervised pretraining for electron microscopy.

A thin library behind the book that reproduces Kazimi, Ruzaeva & Sandfeld,
"Self-Supervised Learning in Electron Microscopy" (arXiv 2402.18286).
Submodules: `emlib.data`, `emlib.models`, `emlib.pretrain`, `emlib.finetune`,
`emlib.metrics`, `emlib.results`, `emlib.paper`, `emlib.sweep`.
"""
__version__ = "0.1.0"


def __getattr__(name):
    # Lazy, so that `import emlib` stays cheap and does not import torch.
    if name == "predict":
        from emlib.tiling import predict
        return predict
    raise AttributeError(f"module 'emlib' has no attribute {name!r}")
