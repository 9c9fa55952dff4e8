"""The email family's named SQL queries (``email.sql``), loaded with
``load_queries("backend.examples.manufacturing.email.sql")``."""
