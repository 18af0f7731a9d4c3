"""Authentication: password hashes, tokens, sign-in throttling and the sign-in routes."""
