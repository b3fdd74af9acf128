"""The one exception family for bad input.

Every stage checks its input before long work starts and raises a :class:`UserError` subclass whose
message names the problem (file, key, column, value) and the fix. The CLI prints the message and exits
with status 2, without a traceback.
"""


class UserError(ValueError):
    """Bad input or configuration; the message names the problem and the fix."""


class PretrainError(UserError):
    """A pretraining run that cannot start or cannot go on; the message says what to change (raised by the
    loop, :mod:`mlm_pretrain.pretrain`, and its data, :mod:`mlm_pretrain.batches`)."""


class FinetuneError(UserError):
    """Bad fine-tuning input (data, labels, model directory); the message names the problem and the fix
    (raised by :mod:`mlm_pretrain.finetune_data`, :mod:`mlm_pretrain.model` for the encoder to start
    from, and the stage)."""
