"""JSON API of the accounts domain, one module per area."""
