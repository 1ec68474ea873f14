"""Custom recognition modules (issue 15): a network trained for one website's captcha
from labelled samples (``capd module train``), stored as a data file in the modules
directory shared by the nodes (``library``), and read by tasks that name it through the
key option ``KEY__name`` or ``capMonsterModule`` (``engine.ModuleRouter``).

Training (``train``, ``net``) needs the ``modules`` extra (PyTorch, onnx); storing,
routing and reading do not.
"""
