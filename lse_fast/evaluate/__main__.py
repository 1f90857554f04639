"""``python -m lse_fast.evaluate``: see ``python -m lse_fast.evaluate --help``."""

import sys

from lse_fast.evaluate.cli import cli

sys.exit(cli())
