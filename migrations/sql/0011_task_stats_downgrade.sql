DROP INDEX taskhub_events_requeued_idx;
DROP TABLE taskhub.stats_watermark;
DROP TABLE taskhub.task_totals;
DROP TABLE taskhub.task_stats;
DROP AGGREGATE taskhub.sum_counts(bigint[]);
DROP FUNCTION taskhub.add_counts(bigint[], bigint[]);
DROP FUNCTION taskhub.stats_bounds();
