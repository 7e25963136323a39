"""Every content rule: `entries` (saving, publishing, the visitor filter, public queries),
`reads` (the hot public reads), `markdown`, `media` (uploads), `page_cache` (the public page
cache and its coherence) and `views` (counting entry views)."""
