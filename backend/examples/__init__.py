"""The worked examples: each folder is an app shaped like a team's own (see docs/apps.md)."""
