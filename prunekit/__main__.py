"""``python -m prunekit`` (and ``torchrun … -m prunekit run RECIPE``): the ``prunekit`` command."""

import sys

from prunekit.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
