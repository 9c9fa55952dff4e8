"""What taskhub adds to procrastinate's worker: progress, results and errors of each job."""
