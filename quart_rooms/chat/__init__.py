"""Chat use cases with no transport in them: joins and history, posting, deletion, limits."""
