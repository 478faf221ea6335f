"""The reference organisation: agents, streams and patterns of the seed articles, runnable."""
