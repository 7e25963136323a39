"""Every rule about accounts, for the pages, the API and the `keel users` command alike.

`users` creates, finds, changes and deletes accounts; `sign_in` covers the first run,
signing in and signing out everywhere; `passwords` covers password changes and one-time
reset links; `verification` e-mail addresses; `sessions`, `tokens` and `api_keys` the
three ways to be signed in; `password_hashing` argon2id and the password rules;
`throttle` login throttling; `audit` the audit log.
"""
