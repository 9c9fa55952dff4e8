"""The manufacturing example's sync family: the ERP sync, archiving, backups."""
