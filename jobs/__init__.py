"""Declarative jobs, state, planner, scheduler and the ferry CLI."""
