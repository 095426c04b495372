"""Backends: executable forms of an IR graph.  `torch_backend` is the PyTorch reference (the
oracle); the Triton backend follows.  Importing this package does not import torch."""
