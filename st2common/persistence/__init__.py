"""Database access: connection set-up, the embedded server, and the generic access class."""
