"""The order family's named SQL queries (``orders.sql``), loaded with
``load_queries("backend.examples.manufacturing.orders.sql")``."""
