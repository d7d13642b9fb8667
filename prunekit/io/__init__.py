"""Reading and writing models and files safely (see :mod:`prunekit.io.checkpoint`)."""

from prunekit.io.checkpoint import (
    atomic_write_bytes,
    atomic_write_text,
    load_state_dict,
    load_weights_into,
    save_state_dict,
)

__all__ = ["atomic_write_bytes", "atomic_write_text", "load_state_dict", "load_weights_into",
           "save_state_dict"]
