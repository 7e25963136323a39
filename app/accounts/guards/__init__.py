"""Who is calling and what they may do: `roles` (the route guards, `requires(Role.x)`),
`identity` (the caller from a session, a token or an API key; the first-run redirect) and
`rate_limit` (the API's per-identity budget)."""
