"""Where a budget's state lives: the Store protocol and the stores that implement it."""
