"""HTML pages of the accounts domain, one module per area."""
