"""Analytics: rollups of events, email engagement, profiles and segment
sizes (kept by a scheduled workflow), and the queries the analytics API and
the dashboard answer from them."""
