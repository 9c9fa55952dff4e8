"""Integrations with the frameworks teams already run: deferring from their ORM's transaction."""
