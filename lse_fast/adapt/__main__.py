"""``python -m lse_fast.adapt``: see ``python -m lse_fast.adapt --help``."""

import sys

from lse_fast.adapt import cli

sys.exit(cli())
