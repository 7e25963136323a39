"""Analytics: request figures per minute rolled up into the database (per minute, hour and
day), entry views per period, and the site's counts (`/api/v1/stats`, `/admin/analytics`)."""
