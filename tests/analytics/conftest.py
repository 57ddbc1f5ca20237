"""Fixtures for analytics: the fake SendGrid of the delivery tests."""

from tests.delivery.conftest import sendgrid  # noqa: F401 - a fixture, re-exported
