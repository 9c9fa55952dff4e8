"""The ERP sync's named SQL queries (``erp.sql``), loaded with
``load_queries("backend.examples.erp.sql")``."""
