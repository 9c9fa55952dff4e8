"""Process management: `taskhub up`, the worker supervisor, the embedded server, migrations."""
