"""The manufacturing example's payments family."""
