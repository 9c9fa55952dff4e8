DROP VIEW taskhub.throughput_hourly;
DROP VIEW taskhub.operator_actions;
DROP VIEW taskhub.task_durations;
DROP VIEW taskhub.failures_by_day;
DROP VIEW taskhub.job_history;
DROP TABLE taskhub.alert_states;
