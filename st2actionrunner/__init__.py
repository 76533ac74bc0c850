"""The action runner: schedules requested executions and runs them with their runners."""
