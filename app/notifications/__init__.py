"""Messages to people: the `notify` job (e-mail through SMTP or the admin outbox) and the
in-app notifications a signed-in user reads at /account/notifications."""
