"""eoseg: semantic labeling of aerial and satellite images (PyTorch): the SegNet-for-EO method,
with U-Net and UNetFormer beside SegNet.

The importable core of the pipeline; the top-level scripts and the notebooks are thin
shells over it. See README.md for the workflow.
"""

__version__ = "0.1.0"
