"""The manufacturing example's order family."""
