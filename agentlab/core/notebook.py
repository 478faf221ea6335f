"""Notebook helpers.

    agentlab.allow_asyncio_run()     # then paste a blog's `asyncio.run(main())` unchanged
"""

from __future__ import annotations

import asyncio


def allow_asyncio_run() -> None:
    """Let ``asyncio.run(main())`` work inside a notebook cell, where a loop already runs.

    Opt-in and for pasted snippets only: it patches the notebook's loop to be re-entrant
    (with ``nest_asyncio2``, the maintained fork ipykernel itself uses). agentlab's own API
    never needs it, since agentlab runs its own loop on a separate thread.
    """
    import nest_asyncio2

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    nest_asyncio2.apply(loop)
