"""Email delivery: templates, providers and routing, sending, engagement
tracking, suppression and provider webhooks. (Not named `email`: that is
the standard library's MIME package.)"""
