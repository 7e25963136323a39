"""The built-in job types of the jobs domain: `cleanup`, `exports`, `reports`, `imports`."""
