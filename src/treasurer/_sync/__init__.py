"""The blocking facade: a budget for threads and plain synchronous code."""
