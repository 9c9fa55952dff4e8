"""The manufacturing platform's monitoring API, in the seed's shape, on taskhub's read model."""
