"""The analytics family's named SQL statements."""
