"""JSON API of the content domain: `entries` (/api/v1/content) and `media` (/api/v1/media)."""
