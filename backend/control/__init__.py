"""Reading and controlling what runs: jobs, queues, long polls, alerts."""
