"""HTML of the content domain: `public` (the site), `feeds` (Atom, sitemap, robots.txt),
`admin` (the editor), `media` (/media and /admin/media) and `cache` (the page cache's
middleware in front of the public pages)."""
