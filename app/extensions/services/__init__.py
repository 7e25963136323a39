"""The plugin host's rules: `manifest` (plugin.toml), `archive` (uploaded zips), `signing`
(checksums and signatures), `isolation` (each plugin's own storage), `lifecycle` (install,
activate, deactivate, accept, update, uninstall) and `host` (the plugins a process runs)."""
