"""Declaring work: tasks and their policies, schedules, and the apps that bring them."""
