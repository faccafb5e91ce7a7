"""eoseg: semantic labeling of aerial and satellite images with SegNet (PyTorch).

The importable core of the pipeline; the top-level scripts and the notebooks are thin
shells over it. See README.md for the workflow.
"""

__version__ = "0.1.0"
