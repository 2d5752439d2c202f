"""Triton kernels and their launchers, no autograd in here.

``masked_matmul`` imports triton; set ``TRITON_INTERPRET=1`` before that first import to run
the kernels on the CPU (slowly). ``occupancy`` is plain torch.
"""
