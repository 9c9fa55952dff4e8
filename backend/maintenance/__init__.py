"""Services behind taskhub's own maintenance tasks."""
