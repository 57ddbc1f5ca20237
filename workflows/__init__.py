"""Temporal workflow definitions. Modules here import only pure
definitions (through `imports_passed_through`) and have no side effects."""
