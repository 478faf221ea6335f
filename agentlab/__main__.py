"""``python -m agentlab ...``: the same as the ``agentlab`` command."""

import sys

from .programs.cli import main

sys.exit(main())
