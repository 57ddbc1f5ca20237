"""Fixtures for campaigns: the fake providers of the delivery tests."""

from tests.delivery.conftest import mixmax, sendgrid  # noqa: F401 - fixtures, re-exported
