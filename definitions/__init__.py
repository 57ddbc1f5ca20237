"""Pure definitions (pydantic + stdlib only): safe to import from workflow
code inside Temporal's sandbox, and shared by the API, SQL compilation and
workflow interpretation."""
