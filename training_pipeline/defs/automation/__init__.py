"""Schedules, sensors and jobs that keep the aid ranges and their datasets fresh."""
