"""The guestbook plugin shipped with Keel (docs/plugins.md, "The guestbook, an example")."""
