"""The admin side: account, room and grant management, and the audit log."""
