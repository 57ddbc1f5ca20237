"""Fixtures for topics: the fake SendGrid of the delivery tests (the preference page needs a sent message)."""

from tests.delivery.conftest import sendgrid  # noqa: F401 - fixture, re-exported
