"""taskhub: background tasks for business applications, on PostgreSQL alone."""
