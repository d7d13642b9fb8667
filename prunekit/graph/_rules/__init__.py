"""Label-propagation rules, one per op family; importing this package registers them all."""

from prunekit.graph._rules import attention, elementwise, layers, shape  # noqa: F401
