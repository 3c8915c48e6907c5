"""Async Cloudreve v4 transfer engine."""
