"""Compute kernels behind the sparse_tickets backends; no autograd in here."""
