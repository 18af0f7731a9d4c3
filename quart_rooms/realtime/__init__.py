"""The Socket.IO side: the server, its event handlers and the live effects of admin changes."""
