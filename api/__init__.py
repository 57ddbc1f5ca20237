"""The management API (:3001): secret-key endpoints under /api/v1, OpenAPI at /docs."""
