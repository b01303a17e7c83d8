"""The example's front page and its live feed: every protocol's events on one page."""
