"""IO managers: where asset outputs are stored between steps."""
