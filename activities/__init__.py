"""Temporal activities: the side effects workflows ask for. Activities that
need clients are methods of classes built once in the worker."""
