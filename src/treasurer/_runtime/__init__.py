"""The budget's runtime: the actor task that applies commands, and event delivery."""
