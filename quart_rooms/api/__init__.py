"""The HTTP API shared pieces and the signed-in user's routes."""
