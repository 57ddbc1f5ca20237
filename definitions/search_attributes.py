"""Temporal search attributes this platform writes (all Keyword).

Registered by `mp up` on the dev server and by `mp temporal setup` on an
external cluster. Budget: 10 Keyword slots on SQL visibility.
"""

from __future__ import annotations

from collections.abc import Mapping

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

WORKSPACE_ID = SearchAttributeKey.for_keyword("WorkspaceId")
PROFILE_ID = SearchAttributeKey.for_keyword("ProfileId")
FLOW_ID = SearchAttributeKey.for_keyword("FlowId")
CAMPAIGN_ID = SearchAttributeKey.for_keyword("CampaignId")
FLOW_STEP = SearchAttributeKey.for_keyword("FlowStep")

ALL = (WORKSPACE_ID, PROFILE_ID, FLOW_ID, CAMPAIGN_ID, FLOW_STEP)
NAMES = tuple(key.name for key in ALL)


def typed(values: Mapping[SearchAttributeKey[str], object | None]) -> TypedSearchAttributes:
    """Search attributes from `{key: value}`; values become strings, None is left out.

    The one place a start (client- or workflow-side) turns ids into search attributes.
    """
    return TypedSearchAttributes(
        [SearchAttributePair(key, str(value)) for key, value in values.items() if value is not None]
    )
