"""(being written) reference masked optimizer steps."""


def masked_sgd_step(*args, **kwargs):
    raise NotImplementedError


def masked_adam_step(*args, **kwargs):
    raise NotImplementedError
