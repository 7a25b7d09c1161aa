"""What people see while the harness works: progress displays, and durations and sizes written
for them."""
