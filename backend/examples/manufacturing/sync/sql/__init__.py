"""The sync family's named SQL statements."""
