"""The manufacturing example's email family."""
