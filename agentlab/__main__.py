"""``python -m agentlab ...``: the same as the ``agentlab`` command."""

import sys

from .cli import main

sys.exit(main())
